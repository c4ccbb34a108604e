"""The harness every simulation shares: a whole system on one machine, and ways to drive it.

``netproxy`` is a TCP link that can be cut (cut, one-way, blackhole, heal); ``cluster``
starts a broker, the real server and real terminals wired through those links, and audits
every terminal journal against the server; ``driver`` drives a cluster from outside (the
HTTP API with real tokens, tills with simulated readers, scanners and cameras, the waits
between two steps of a story); ``world`` writes a small populated city straight into the
server's database (tests, the payments demo, the chaos run's meals). Modules here may import
``server``, ``terminal``, ``shared``, ``hardware`` and each other, never another
``simulator`` package. This file imports nothing.
"""
