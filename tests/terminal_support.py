"""A terminal configuration for tests that build a terminal's parts without a server or a
broker (their URLs point at a closed port)."""

from __future__ import annotations

from pathlib import Path

from shared.protocol import ServerKey
from terminal.config import TerminalConfig


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
