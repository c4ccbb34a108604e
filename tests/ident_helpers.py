"""A terminal that is not connected to anything, with a cache filled by hand, for the
identification tests (NFC, QR, digital RMB)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.clock import FakeClock
from shared.paycode import public_key_hex
from shared.protocol import ServerKey
from shared.protocol.messages import decode_changes
from simulator.harness.world import meal
from terminal.agent import Terminal
from terminal.config import TerminalConfig

QR_SEED = bytes(range(32))
CANTEEN = {
    "unit_id": "U01",
    "meals": {"lunch": meal("11:30", "13:30", 1200, 1500)},
    "items": {"water": {"name": "矿泉水", "price_fen": 200, "reference_price_fen": 200}},
}


def qr_key_change(
    holder_id: str = "H1", seed: bytes = QR_SEED, expires_at_ms: int = 2**52, allowance: int = 3000
) -> dict[str, Any]:
    return {
        "kind": "qr_key",
        "holder_id": holder_id,
        "public_key": public_key_hex(seed),
        "expires_at_ms": expires_at_ms,
        "offline_allowance_fen": allowance,
    }


def base_changes(canteen: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [
        {"kind": "canteen", "canteen_id": "C01", "config": canteen or CANTEEN},
        {
            "kind": "holder",
            "holder_id": "H1",
            "unit_id": "U01",
            "subsidy_fen": 10_000,
            "self_fen": 0,
            "blocked": False,
        },
        {"kind": "card", "card_id": "C1", "holder_id": "H1", "status": "active"},
        qr_key_change(),
    ]


def offline_terminal(tmp_path: Path, clock: FakeClock, *, online: bool = True, **config: Any) -> Terminal:
    """A terminal whose sync agent is never started; ``online`` pretends the link is up and
    the cache caught up. Its card reader is the in-process simulated one unless ``reader``
    says otherwise."""
    config.setdefault("reader", "simulated")
    cfg = TerminalConfig(
        terminal_id="T-ident",
        canteen_id="C01",
        secret_hex="00" * 32,
        server_public_key=ServerKey.generate().public_hex,
        broker_url="mqtt://127.0.0.1:1",
        server_url="http://127.0.0.1:1",
        db_path=str(tmp_path / "terminal.sqlite"),
        **config,
    )
    t = Terminal(cfg, clock)
    t.store.apply_changes(1, decode_changes(tuple(base_changes())))
    t.sync.assume(online)  # what the sync agent would know
    t.sync.last_sync_ms = clock.now_ms()
    return t
