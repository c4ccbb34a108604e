"""Sales: the MQTT ingest worker (``ingest``), applying one sale at most once
(``apply``), credentials spent twice (``double_spend``) and the incidents they raise
(``incidents``), QR payment credentials (``qr_codes``, drawn by ``qr_render``), face
enrollment and evaluation (``faces``, ``face_evaluate``) and digital RMB (``ecny``).

May import: ``infra``, ``books``, ``downstream``, ``registry`` and ``shared`` — never
``closing``, ``cli`` or ``api``.
"""
