"""Moving a running city from SQLite to PostgreSQL (`canteen-server migrate-db`): every row,
the same ledger, the same `check`, and the city keeps working there; and back again."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from server.books import ledger
from server.cli import main
from server.closing.clearing import close_year
from server.closing.settlement import settle_quarter
from server.downstream.deltas import current_version, record_delta
from server.infra import dbcopy, pg
from server.infra.db import open_db, write_txn
from server.registry import cards
from shared.clock import FakeClock, ms_from_china
from tests.money_world import MoneyWorld

pytestmark = pytest.mark.sqlite_only("copies a real SQLite file (the suite's database is PostgreSQL there)")


@pytest.fixture
def empty_pg(pg_admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (the administrator's `createdb`)."""
    name = f"canteen_move_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = pg_admin_url.rsplit("/", 1)[0] + "/" + name
    yield url
    pg.close_pools(url)
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def city(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A data folder whose SQLite database has a quarter of a small city in it: allocations,
    top-ups, sales (applied, rejected, quarantined), a lost card replaced, a settled quarter,
    a cleared year, canteen config history."""
    home = tmp_path / "city"
    assert CliRunner().invoke(main, ["--home", str(home), "init"]).exit_code == 0
    conn = open_db(home / "server" / "canteen.sqlite")
    clock = FakeClock(ms_from_china("2026-02-10T12:00"))
    w = MoneyWorld(conn, clock, diners=6)
    for unit in ("U01", "U02"):
        w.allocate(unit, "2026Q1")
    w.topup("K001", 5_000)
    w.topup("K002", 800)
    for i, card in enumerate(["K001", "K002", "K003", "K004", "K005", "K001", "K006"]):
        w.sell(card, 1200 if i % 2 else 1000, canteen="C01" if i % 2 else "C02")
    w.sell("K999", 1200)  # an unknown card: rejected
    w.sell("K003", 1201, meal_period="lunch")  # not the lunch price: quarantined
    with write_txn(conn):
        cards.replace(conn, "K004", "K004B", clock.now_ms())  # newest card of H004
    clock.set_ms(ms_from_china("2026-04-02T09:00"))
    w.all_report(clock.now_ms())
    with write_txn(conn):
        settle_quarter(conn, "2026Q1", clock.now_ms())
    clock.set_ms(ms_from_china("2027-01-03T09:00"))
    w.all_report(clock.now_ms())
    with write_txn(conn):
        close_year(conn, 2026, clock.now_ms(), refund_to="unit")
    yield home, conn
    conn.close()


def _migrate(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, [*args, "--json"])
    out = result.output[result.output.index("{") :] if "{" in result.output else "{}"
    return result.exit_code, json.loads(out)


def _everything(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    """Every row of every table, in a comparable form (sorted)."""
    out = {}
    for t in dbcopy.tables(conn):
        cols = sorted(dbcopy.columns(conn, t))
        rows = conn.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall()  # noqa: S608
        out[t] = sorted((tuple(r) for r in rows), key=repr)
    return out


def test_a_city_moves_to_postgresql_whole_and_keeps_working_there(
    city: tuple[Path, sqlite3.Connection], empty_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, source = city
    before = _everything(source)
    code, report = _migrate("--home", str(home), "migrate-db", "--to", empty_pg)
    assert code == 0, report
    assert report["ok"] and report["matches"] and report["source_check"] == report["target_check"] == []
    assert report["tables"]["sales"] == 9 and report["tables"]["quarantined_sales"] == 1
    assert report["source_ledger"] == report["target_ledger"]
    assert report["source_ledger"]["balances_sum_fen"] == 0
    target = open_db(empty_pg)
    assert _everything(target) == before  # row for row, value for value
    assert _everything(source) == before  # the source is never changed
    # the order the code reads from SQLite's rowid came along: H004's newest card
    assert (
        target.execute("SELECT card_id FROM cards WHERE holder_id = 'H004' ORDER BY rowid DESC").fetchone()[0]
        == "K004B"
    )

    # the city runs on PostgreSQL now: `check` there, and new writes continue the numbering
    monkeypatch.setenv("CANTEEN_DATABASE_URL", empty_pg)
    checked = CliRunner().invoke(main, ["--home", str(home), "check", "--json"])
    assert checked.exit_code == 0, checked.output
    last_txn = target.execute("SELECT max(id) FROM txns").fetchone()[0]
    version = current_version(target)
    with write_txn(target):
        txn = ledger.post(
            target, "topup", [ledger.Move(ledger.BANK_TOPUP, ledger.self_purse("H001"), 100)], 1
        )
        assert (
            record_delta(
                target, [{"kind": "card", "card_id": "K001", "holder_id": "H001", "status": "active"}], 1
            )
            == version + 1
        )
    assert txn == last_txn + 1
    target.close()


def test_a_target_with_data_is_refused_and_left_as_it_was(
    city: tuple[Path, sqlite3.Connection], empty_pg: str
) -> None:
    home, _ = city
    assert _migrate("--home", str(home), "migrate-db", "--to", empty_pg)[0] == 0
    target = open_db(empty_pg)
    before = _everything(target)
    result = CliRunner().invoke(main, ["--home", str(home), "migrate-db", "--to", empty_pg])
    assert result.exit_code == 2 and "database_not_empty" in result.output
    assert _everything(target) == before
    target.close()


def test_and_back_from_postgresql_to_a_new_sqlite_file(
    city: tuple[Path, sqlite3.Connection], empty_pg: str, tmp_path: Path
) -> None:
    home, source = city
    assert _migrate("--home", str(home), "migrate-db", "--to", empty_pg)[0] == 0
    back = tmp_path / "back.sqlite"
    code, report = _migrate("--home", str(home), "migrate-db", "--from", empty_pg, "--to", str(back))
    assert code == 0 and report["ok"], report
    copy = open_db(back)
    assert _everything(copy) == _everything(source)
    copy.close()
