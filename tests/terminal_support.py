"""A terminal configuration for tests that build a terminal's parts without a server or a
broker (their URLs point at a closed port), a sale journaled straight into a store, and a
display that checks a result is on disk before the diner or operator is told."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hardware.display import MemoryDisplay, Screen
from shared.protocol import Sale, ServerKey
from terminal.config import TerminalConfig
from terminal.store import Store


def offline_config(tmp_path: Path, **settings: object) -> TerminalConfig:
    """Terminal T1 of canteen C1, its database in ``tmp_path``; ``settings`` on top."""
    return TerminalConfig.from_dict(
        {
            "terminal_id": "T1",
            "canteen_id": "C1",
            "secret_hex": "00" * 32,
            "server_public_key": ServerKey.generate().public_hex,
            "broker_url": "mqtt://127.0.0.1:1",
            "server_url": "http://127.0.0.1:1",
            "db_path": str(tmp_path / "t.sqlite"),
            **settings,
        }
    )


def journal_sale(store: Store, amount_fen: int, occurred_at_ms: int, **fields: Any) -> Sale:
    """A sale paid all from subsidy, journaled by terminal T1 of canteen C01 for card C1 of
    holder H1; ``fields`` on top (other ids, ``kind``, ``meal_period``, ``announced`` …)."""
    return store.record_sale(
        **{
            "terminal_id": "T1",
            "canteen_id": "C01",
            "card_id": "C1",
            "holder_id": "H1",
            "amount_fen": amount_fen,
            "subsidy_fen": amount_fen,
            "self_fen": 0,
            "occurred_at_ms": occurred_at_ms,
            **fields,
        }
    )


class JournalCheckingDisplay(MemoryDisplay):
    """When a screen that tells a result (``tells(screen)``) is shown, notes how many rows of
    ``table`` another connection sees: the result must already be committed."""

    def __init__(self, db_path: str, table: str, tells: Callable[[Screen], bool]) -> None:
        super().__init__()
        self.db_path = db_path
        self.table = table
        self.tells = tells
        self.journaled_when_shown: list[int] = []

    def show(self, screen: Screen) -> None:
        if self.tells(screen):
            conn = sqlite3.connect(self.db_path)
            self.journaled_when_shown.append(conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])
            conn.close()
        super().show(screen)


def holder_with_card(holder_id: str, card_id: str, unit_id: str = "U01") -> tuple[dict[str, Any], ...]:
    """The delta changes for a holder of ``unit_id`` (¥50.00 subsidy, no own money, not
    blocked) and their active card."""
    return (
        {
            "kind": "holder",
            "holder_id": holder_id,
            "unit_id": unit_id,
            "subsidy_fen": 5000,
            "self_fen": 0,
            "blocked": False,
        },
        {"kind": "card", "card_id": card_id, "holder_id": holder_id, "status": "active"},
    )
