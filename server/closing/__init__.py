"""Closing the books: quarterly settlement (``settlement``), year-end clearing
(``clearing``), quality scores and pay percentages (``quality``), statement and payout
files (``statement_files``), reports (``reports``), and the checks of the money
(``audit`` for the business invariants, ``check`` for everything ``canteen-server check``
verifies).

May import: ``infra``, ``books``, ``downstream``, ``registry``, ``sales`` and ``shared``
— never ``cli`` or ``api``.
"""
