"""Terminal configuration: one JSON file per terminal, written at provisioning.

``canteen-server provision-terminal CANTEEN`` prints exactly this shape (plus the paths the
installer sets). Nothing deep inside the terminal reads the environment; the CLI loads this
once and passes it in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TerminalConfig:
    terminal_id: str
    canteen_id: str
    secret_hex: str
    server_public_key: str
    broker_url: str
    server_url: str
    db_path: str = "terminal.sqlite"
    display: str = "console"  # console | memory | board:/dev/ttyACM0 | board-sim (hardware.devices)
    camera: str = ""  # "" = no face pay | file:PATH | simulated | opencv:N | picamera2
    face_engine: str = "dlib"  # dlib | simulated
    # where taps come from (terminal.readers): stdin | fifo:<path> | simulated (in-process, fed
    # by code) | nfc:<device string> (e.g. nfc:usb, nfc:tty:AMA0:pn532)
    reader: str = "stdin"
    qr_scanner: str = "none"  # none | simulated | serial:<port>,<baud>,<eol>
    # none | a real adapter's name (terminal.devices) | simulated (demo and tests only: fake wallets)
    ecny_gateway: str = "none"
    sun_master_key_hex: str = ""  # NTAG 424 SUN master key (32+ hex); empty: cards are UID-only
    batch_size: int = 500  # sales per signed batch (protocol maximum 1000; ~200 KB)
    window: int = 8  # batches in flight before waiting for acks (bench: 500 × 8 drains 10k in ~1.5 s)
    ack_timeout_s: float = 5.0  # a batch unanswered this long: resend, and use offline limits
    # the server's presence heartbeat (server.presence, every 10 s) unheard this long: the
    # server is gone, whatever the broker link says — use offline limits
    server_silence_s: float = 30.0
    heartbeat_s: float = 5.0
    clock_probe_s: float = 300.0  # measure the clock offset to the server this often
    # simulation only: run this terminal's clock off by this much (a Pi with a wrong clock);
    # the terminal must notice (clock probe) and refuse offline sales when it is too far off
    clock_offset_ms: int = 0
    software: str = "canteen-terminal/1"

    @property
    def secret(self) -> bytes:
        return bytes.fromhex(self.secret_hex)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TerminalConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> TerminalConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
