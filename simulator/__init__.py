"""The simulated city: devices, diners, outages and crashes driving the real code.

``simulator.netproxy`` puts a cuttable TCP link between a terminal and the broker/server;
``simulator.cluster`` starts a broker, the real server and real terminals wired through
those links; ``simulator.demo`` is ``make demo``. The simulator talks to the terminal and
server only through their real interfaces (MQTT, HTTP, the terminal's tap entry point with
simulated devices) and checks the result from outside.
"""
