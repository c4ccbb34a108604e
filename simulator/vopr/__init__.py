"""``canteen-sim vopr``: the deterministic simulator (TigerBeetle's VOPR, for canteens).

The real terminal code (``terminal.agent``/``sync``/``store``/``authorize``) and the real
server code (ingest, apply, acks, deltas, settlement and clearing) run in one process, on
a simulated clock, talking through a simulated broker instead of MQTT, with their SQLite
databases on a simulated disk in memory; every decision — taps, network faults, crashes, clock jumps,
business events — is drawn from the seed, so a run replays bit for bit.

``prng`` the seeded streams; ``clock`` simulated time and each node's clock; ``network`` the
broker, links and their faults; ``http`` the terminals' HTTP calls, through the real Flask
app; ``fuse`` crash points; ``disk`` the in-memory databases; ``server_node`` and
``terminal_node`` the real code with its crash points; ``world`` the small city;
``workload`` taps and business events; ``thief`` a compromised terminal's key; ``faults``
what strikes when; ``checks`` the invariants after every step and at the end; ``digest`` the
money tables' digest; ``planted`` known bugs for proving the checks bite; ``options``,
``kinds`` and ``model`` what a run is, counts and shows its parts; ``run`` one run;
``sweep`` many seeds and shrinking; ``render`` the text output. Modules here may import
``simulator.chaos`` (its audit, its implausible sales, its city's limits) and
``simulator.harness`` besides ``server``, ``shared``, ``terminal``. This file imports
nothing.
"""
