"""What goes down to the terminals: the versioned delta log (``deltas``), the change
records terminals cache (``changes``), the snapshot of everything (``snapshot``), the
publisher that sends deltas in order (``publisher``) and the server's presence beacon
(``presence``).

May import: ``infra``, ``books`` and ``shared`` only. The builders of the changes read
their tables directly, so ``registry`` and ``sales`` import this area, never the reverse.
"""
