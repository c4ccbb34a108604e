"""Infrastructure under everything else: the SQLite connection and its write transactions
(``db``), the schema and its migrations (``schema``), the Flask request's database and
clock (``db_flask``), the server's signing key (``keys``), API tokens and roles (``auth``),
what a role may see (``scope``) and reading clerks' CSV files (``csvinput``).

May import: ``shared`` and third-party libraries only — no other area of the server.
"""
