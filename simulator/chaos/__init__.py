"""``canteen-sim chaos`` and ``chaos-sweep``: real processes under faults, then an audit.

``plan`` derives taps and faults from the seed (pure); ``world`` writes the run's small
city into the server's database; ``procs`` starts and kills the broker, server and
terminal processes (and is the embedded broker's child process: ``python -m
simulator.chaos.procs broker PORT``); ``inject`` publishes copies, reorderings and forgeries
on the broker; ``cluster`` starts and strikes a cluster run's NATS nodes, PostgreSQL and two
server processes; ``audit`` compares the terminal journals with the server; ``run`` plays a run
or a sweep and prints it. Modules here may import ``simulator.harness``, each other, and
``server``, ``shared``, ``terminal``, ``hardware``; not ``simulator.city`` or
``simulator.replay``. This file imports nothing.
"""
