"""Small builders shared by tests: a populated server database, signed sales."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.infra.db import dialect, open_db, write_txn
from server.registry import units as registry
from server.registry.terminals import TerminalCredentials, provision
from shared.clock import ms_from_china
from shared.protocol import Reversal, ReversalBatch, Sale, SaleBatch, seal_hmac
from simulator.harness.world import World, demo_world


def populated(conn: sqlite3.Connection, now_ms: int, diners: int = 6) -> World:
    return demo_world(conn, now_ms, diners=diners)


def reopen(conn: sqlite3.Connection) -> sqlite3.Connection:
    """A second connection to the same server database (another writer, as a worker has)."""
    if dialect(conn) == "postgresql":
        return open_db(conn.url)  # type: ignore[attr-defined]
    return open_db(conn.execute("PRAGMA database_list").fetchone()[2])


def terminal(
    conn: sqlite3.Connection, canteen_id: str, now_ms: int, public_key: str = "00" * 32
) -> TerminalCredentials:
    """A provisioned terminal with an id unique across the test session (the broker is
    shared, and retained status messages outlive a test)."""
    with write_txn(conn):
        return provision(conn, canteen_id, now_ms, public_key, terminal_id=f"T-{uuid.uuid4().hex[:8]}")


def sale(
    creds: TerminalCredentials, seq: int, card_id: str, amount_fen: int, at_ms: int, **kw: object
) -> Sale:
    fields = {
        "terminal_id": creds.terminal_id,
        "seq": seq,
        "uuid": uuid.uuid4().hex,
        "card_id": card_id,
        "canteen_id": creds.canteen_id,
        "amount_fen": amount_fen,
        "occurred_at_ms": at_ms,
        "subsidy_fen": amount_fen,
        "self_fen": 0,
    }
    # Default: a shop sale of a typed amount, which any amount within the canteen's limits
    # may be; a meal must cost its period's price (the server quarantines anything else).
    if kw.get("kind", "meal" if "meal_period" in kw else "shop") == "meal":
        fields.update(kind="meal", meal_period="lunch")
    else:
        fields.update(kind="shop", meal_period=None)
    fields.update(kw)
    return Sale(**fields)  # type: ignore[arg-type]


def _signed(
    kind: str, creds: TerminalCredentials, body: dict[str, Any], at_ms: int, msg_id: str | None = None
) -> bytes:
    """A message of ``kind`` signed with the terminal's secret, as the terminal sends it."""
    return seal_hmac(kind, creds.terminal_id, body, bytes.fromhex(creds.secret_hex), at_ms, msg_id)


def signed_batch(
    creds: TerminalCredentials, sales: list[Sale], at_ms: int, msg_id: str | None = None
) -> bytes:
    return _signed("sale_batch", creds, SaleBatch(tuple(sales)).to_body(), at_ms, msg_id)


def signed_reversals(creds: TerminalCredentials, reversals: Sequence[Reversal], at_ms: int) -> bytes:
    """A reversal batch (冲正) as the terminal signs it."""
    return _signed("reversal_batch", creds, ReversalBatch(tuple(reversals)).to_body(), at_ms)


def one_terminal_broker_city(app, terminal_id: str = "T0001") -> tuple[TerminalCredentials, object]:  # noqa: ANN001
    """A unit, a canteen and one provisioned terminal in ``app``'s database, and the locked
    broker's password and ACL files written for them: (its credentials, the BrokerFiles)."""
    from server.registry import broker_users
    from server.registry.units import add_canteen, add_unit

    conn = open_db(app.config["DATABASE"])
    try:
        with write_txn(conn):
            add_unit(conn, "U01", "市财政局")
            add_canteen(conn, "C01", "一食堂", "U01", now_ms=0)
            creds = provision(conn, "C01", 0, "00" * 32, terminal_id)
        files = broker_users.BrokerFiles.from_config(app.config)
        broker_users.write_broker_files(conn, files)
    finally:
        conn.close()
    return creds, files


BOOKS_AT = "2024-01-03T09:00"  # when one_holder_books wrote its city (Beijing time)


def one_holder_books(db_path: Path, *, canteen: bool = True) -> None:
    """Into the server database at ``db_path``: unit U01 (¥300 a quarter) with its canteen
    C01 (unless not ``canteen``) and one cardholder H1 (card K1), at :data:`BOOKS_AT`."""
    conn = open_db(db_path)
    at = ms_from_china(BOOKS_AT)
    with write_txn(conn):
        registry.add_unit(conn, "U01", "市财政局", 30_000)
        if canteen:
            registry.add_canteen(conn, "C01", "财政局食堂", "U01", operator="湘味餐饮有限公司", now_ms=at)
        registry.add_holder(conn, "H1", "U01", "张伟", "K1", now_ms=at)
    conn.close()
