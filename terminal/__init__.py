"""The canteen terminal agent (runs on a Raspberry Pi in the queue).

It decides every sale locally from its SQLite cache (``terminal.store``) with the pure
rules in ``terminal.authorize``, journals the sale and its outbox row in one durable
transaction before telling the diner "paid", and syncs with the server over MQTT
(``terminal.sync``): the outbox goes up in signed batches and leaves only on the server's
acknowledgement; balances, the deny-list, prices and limits come down as versioned deltas,
with an HTTP snapshot after a gap. ``canteen-terminal`` (``terminal.cli``) runs it and
prints the operator's day totals.
"""
