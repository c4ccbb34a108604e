"""The simulated city: devices, diners, outages and crashes driving the real code.

Layout (each package's ``__init__`` says what lives there and what it may import):

* ``simulator.harness`` — shared by all below: ``netproxy`` (a cuttable TCP link between a
  terminal and the broker/server), ``cluster`` (a broker, the real server and real
  terminals wired through those links), ``driver`` (API sessions, tills, settle-down
  waits), ``world`` (a populated server for tests and demos);
* ``simulator.city`` — ``canteen-sim city``: a generated city's working days;
* ``simulator.replay`` — ``canteen-sim replay``: scenario files read, played and checked;
* ``simulator.chaos`` — ``canteen-sim chaos``: real processes under faults, audited;
* ``simulator.demo`` (``make demo``: a small city), ``simulator.payments_demo`` (card, QR
  and digital RMB through their device paths) and ``simulator.cli`` (``canteen-sim``).

Imports point one way, towards ``harness``: ``cli`` may import any of them, ``demo``
imports ``city``, and ``city``, ``replay``, ``chaos`` and ``payments_demo`` import
``harness`` but never each other or ``cli``/``demo``; ``harness`` imports no other part.
The simulator talks to the terminal and server only through their real interfaces (MQTT,
HTTP, the terminal's tap entry point with simulated devices) and checks the result from
outside.
"""
