"""``canteen-sim replay``: a scripted scenario on a simulated clock, through the real system.

The scenario reader is pure: ``scenario`` reads and validates a scenario file (with
``read`` for its values and ``events`` for its events), ``check`` holds a result to the
scenario's ``expect`` block and to the invariants. ``run`` plays the story through a
cluster; ``result`` reads the outcome back from the server's API (it sees the story only
through its :class:`~simulator.replay.result.Story` protocol) and prints it. Modules here may
import ``simulator.harness``, each other, and ``server``, ``terminal``, ``shared``,
``hardware``; not ``simulator.city`` or ``simulator.chaos``. This file imports nothing.
"""
