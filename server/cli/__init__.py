"""``canteen-server``, the command line: the main group and the service commands
(``root``), one module per command group (``registry``, ``people``, ``money``, ``faces``,
``qr``, ``ecny``) and the edge every command shares (``output``: printing, and domain
errors turned into exit codes).

May import: every other area of the server. ``server.cli:main`` (the console script) is
looked up lazily below, so importing ``server.cli.output`` does not load every command.
"""


def __getattr__(name: str):  # noqa: ANN202
    if name == "main":
        # lazily: the package itself imports nothing; the entry point ``server.cli:main``
        # (setup.cfg) reaches the real click group through here
        from server.cli.root import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
