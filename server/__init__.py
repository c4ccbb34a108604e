"""The central server: it keeps the money.

It imports nothing itself (``import server.books.spend`` loads no Flask). The areas, from
the bottom up — each may import only those below it:

* ``server.infra`` — the SQLite database and its schema, keys, tokens and roles, CSV input;
* ``server.books`` — pure money: the double-entry ledger in integer fen, the purse split,
  the settlement and clearing arithmetic, quarters and days;
* ``server.downstream`` — the versioned delta log, the change records and the snapshot the
  terminals cache, the publisher, the presence beacon;
* ``server.registry`` — units, holders, the roster, cards, leavers, canteens, operators,
  terminals, and the money coming in (allocations, top-ups);
* ``server.sales`` — the MQTT ingest worker that verifies, applies, commits and only then
  acknowledges; applying a sale at most once; double spends; QR codes; faces; e-CNY;
* ``server.closing`` — quarterly settlement, year-end clearing, quality, statement files,
  reports and the money checks;
* at the top: ``server.api`` (one Flask blueprint per resource), ``server.app``
  (``create_app``), ``server.service`` (the running service: HTTP, ingest, publisher) and
  ``server.cli`` (the ``canteen-server`` command).
"""
