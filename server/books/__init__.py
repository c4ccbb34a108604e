"""The books: pure money. The double-entry ledger in integer fen and its account ids
(``ledger``), splitting a payment between the purses (``spend``), the arithmetic of
settlement and year-end clearing (``settlement_rules``) and the calendar of quarters,
days and years (``periods``).

May import: ``shared`` only — no other area of the server, not even ``infra`` (so
``import server.books.spend`` loads neither Flask nor the database layer).
"""
