"""The registry the money hangs on: units (``units``), cardholders and their downstream
change (``holders``), people as one view (``people``), the staff roster (``roster``),
leavers and their refunds (``leavers``), cards (``cards``), canteens and their
configuration (``canteens``, ``canteen_config``, ``seed_table``), operators and payees
(``operators``), terminals (``terminals``) and the money coming in: allocations and
top-ups (``funds``).

May import: ``infra``, ``books``, ``downstream`` and ``shared`` — never ``sales``,
``closing``, ``cli`` or ``api``.
"""
