"""Code shared by the terminal and the server.

``shared.protocol`` is the terminal–server contract (pure, no I/O). Beside it live the few
pieces both deployables need: money formatting and rounding (``shared.money``), domain error
codes with their zh-CN/English texts (``shared.errors``), clocks (``shared.clock``), the one
module that imports paho-mqtt (``shared.mqtt``) and the broker launchers (``shared.broker``),
and the rules both sides must apply alike: face matching (``shared.face_match``).
"""
