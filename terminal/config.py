"""Terminal configuration: one JSON file per terminal, written at enrolment.

``canteen-terminal enrol --server URL CODE`` writes exactly this shape (0600) from what the
server hands out for a one-time code, plus the settings the installer gives with ``--set``
(``provision-terminal --with-secret`` prints it on the server, the old way). Nothing deep
inside the terminal reads the environment; the CLI loads this once and passes it in.

:meth:`TerminalConfig.load` checks the file before anything runs: a missing file, bad JSON,
a missing key or a value of the wrong type is a :class:`~shared.errors.DomainError`
(``config_invalid``) naming the file and the key. Relative paths in it (``db_path``, a
``fifo:`` reader, a ``file:`` camera) are taken from the configuration file's folder, not
from wherever the command happens to be run.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from shared.errors import DomainError
from shared.protocol.codec import TERMINAL_ID

# the settings that name a file, and the prefix before the path in their value
_PATH_SETTINGS = (
    ("db_path", ""),
    ("reader", "fifo:"),
    ("camera", "file:"),
    ("update_root", ""),
    ("z_report_dir", ""),
    ("ca_file", ""),
)
_HEX_SETTINGS = ("secret_hex", "server_public_key", "sun_master_key_hex", "release_public_key")
MODES = ("meal", "shop")


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
    # signed updates (terminal.updater, terminal.launcher): the release key's public half,
    # pinned (empty: no update is ever installed); the folder with versions/ and current
    # (empty: updates off); how long the queue must be quiet before restarting into a new
    # version; how long a new version has to reach the server before it is rolled back
    release_public_key: str = ""
    update_root: str = ""
    update_quiet_s: float = 30.0
    update_health_s: float = 600.0
    # what a card pays for when the terminal starts: "meal" (the meal of the hour) or "shop"
    # (the cashier's basket, terminal.shop_flow); an operator card switches it on the device
    mode: str = "meal"
    z_report_dir: str = ""  # where day-close Z-reports are written; "" = z-reports/ beside db_path
    # acknowledged sales stay in the journal at least this long, and longer until the server
    # says they are in a backup it keeps (terminal.journal_keep)
    journal_keep_days: float = 31.0
    # HTTPS to the server (and mqtts:// to the broker) checked against this CA certificate
    # instead of the system's store: a deployment with its own CA ("" = the system's)
    ca_file: str = ""
    # true: subscribe at QoS 0 to the topics whose loss the protocol repairs by itself (its
    # acks, the server's presence, its own status, update and key offers; terminal.sync
    # names them and why), QoS 1 to the rest — on NATS each QoS 1 subscription is a
    # JetStream consumer, and the broker's CPU per message grows with their number
    # (docs/scaling.md). false (the default): QoS 1 for every subscription
    mqtt_light_subscriptions: bool = False
    # true: the deltas at QoS 0 too. A lost last delta is then found only through the
    # server's presence saying its newest delta version: set it only where every server
    # process runs with PRESENCE_DELTA_VERSION (docs/scaling.md, the rollout order); false
    # (the default): deltas at QoS 1, a lost last delta seen at the next one as before
    mqtt_light_deltas: bool = False

    @property
    def secret(self) -> bytes:
        return bytes.fromhex(self.secret_hex)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TerminalConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in _broker_list_joined(d).items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> TerminalConfig:
        """The configuration in the JSON file ``path``, checked, with its relative paths
        resolved against the file's folder; DomainError ``config_invalid`` otherwise."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise DomainError("config_invalid", f"{path}: no such file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise DomainError("config_invalid", f"{path}: cannot be read ({exc})") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DomainError("config_invalid", f"{path}: not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise DomainError("config_invalid", f"{path}: expected a JSON object of settings")
        problem = _check(_broker_list_joined(data))
        if problem:
            raise DomainError("config_invalid", f"{path}: {problem}")
        return cls.from_dict(data).resolved(path.resolve().parent)

    def resolved(self, folder: Path) -> TerminalConfig:
        """This configuration with its relative file paths taken from ``folder``."""
        changes: dict[str, str] = {}
        for name, prefix in _PATH_SETTINGS:
            value: str = getattr(self, name)
            if value.startswith(prefix) and value[len(prefix) :]:
                target = Path(value[len(prefix) :]).expanduser()
                if not target.is_absolute():
                    changes[name] = prefix + str(folder / target)
        return replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_settings(data: dict[str, Any]) -> str:
    """What is wrong with a configuration's settings ('' when nothing is)."""
    return _check(data)


def _broker_list_joined(data: dict[str, Any]) -> dict[str, Any]:
    """``broker_url`` may list a clustered broker's nodes (a JSON list of URLs): kept as
    the one comma-separated string the link reads (``BrokerAddress.parse_list``)."""
    urls = data.get("broker_url")
    if isinstance(urls, list) and all(isinstance(u, str) for u in urls):
        return {**data, "broker_url": ",".join(urls)}
    return data


def _check(data: dict[str, Any]) -> str:
    """What is wrong with a configuration's settings ('' when nothing is)."""
    missing = [
        f.name
        for f in fields(TerminalConfig)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in data
    ]
    if missing:
        return "missing key(s) " + ", ".join(f'"{name}"' for name in missing)
    for f in fields(TerminalConfig):
        if f.name not in data:
            continue
        value, kind = data[f.name], f.type
        if kind == "str":
            ok = isinstance(value, str)
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:  # float
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            return f'key "{f.name}" must be {_KIND_NAMES[kind]}, not {json.dumps(value, ensure_ascii=False)}'
        if kind in ("int", "float") and f.name != "clock_offset_ms" and value <= 0:
            return f'key "{f.name}" must be greater than 0, not {value}'
        if f.name in _HEX_SETTINGS and value and not _is_hex(value):
            return f'key "{f.name}" must be hexadecimal digits'
        if f.name in ("terminal_id", "canteen_id", "db_path") and not value.strip():
            return f'key "{f.name}" must not be empty'
        if f.name == "mode" and value not in MODES:
            shown = json.dumps(value, ensure_ascii=False)
            return f'key "mode" must be one of {", ".join(MODES)}, not {shown}'
        if f.name == "terminal_id" and not TERMINAL_ID.fullmatch(value):
            return f'key "terminal_id" must be 1-32 letters, digits, - or _ (MQTT topics), not {value!r}'
    return ""


_KIND_NAMES = {"str": "a string", "int": "a whole number", "float": "a number", "bool": "true or false"}


def _is_hex(value: str) -> bool:
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True
