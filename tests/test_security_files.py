"""Issue 11: what the server writes to disk and to spreadsheets cannot be turned against
the people who open it — formula injection in CSV exports, files others may read."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli.root import main as server_main
from server.closing.statement_files import payout_csv, statement_csv
from server.infra.csv_safe import Number, safe_cell, write_csv
from server.infra.db import open_db, write_txn
from server.registry import units
from shared.mqtt import BrokerAddress, redacted_url
from tests.helpers import populated

EVIL = ['=HYPERLINK("http://evil","点我")', "+cmd|' /C calc'!A0", "-1+1", "@SUM(A1)", "\t=1", "\r=1"]


def rows(text: str) -> list[list[str]]:
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:], newline="")))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_text_cells_that_start_a_formula_are_neutralised_numbers_are_not() -> None:
    assert [safe_cell(v) for v in EVIL] == ["'" + v for v in EVIL]
    assert [safe_cell(v) for v in (-150, Number("-¥1.50"), "市财政局食堂", None)] == [
        -150,
        "-¥1.50",
        "市财政局食堂",
        "",
    ]
    [header, row] = rows(write_csv(["名称", "金额(分)", "金额"], [[EVIL[0], -150, Number("-¥1.50")]]))
    assert row == ["'" + EVIL[0], "-150", "-¥1.50"]


def statement_doc(name: str, payee: dict[str, str]) -> dict:
    st = {
        "canteen_id": "C01",
        "canteen_name": name,
        "unit_id": "U01",
        "operator": name,
        "self_operated": False,
        "sales_count": 3,
        "gross_fen": 1000,
        "quality_score": 90,
        "pay_pct": 100,
        "withheld_fen": 0,
        "settlement_fen": 1000,
        "fee_fen": 5,
        "net_fen": 995,
        "payee": payee,
        "adjustments": [
            {
                "date": "2026-04-02",
                "quarter": "2026Q1",
                "count": -1,
                "amount_fen": -150,
                "pay_pct": 100,
                "withheld_fen": 0,
            }
        ],
    }
    return {"quarter": "2026Q1", "statements": [st]}


def test_statements_and_payout_lists_neutralise_names_and_payee_details_but_keep_negative_amounts() -> None:
    payee = {"name": EVIL[1], "company_name": EVIL[0], "bank_name": EVIL[3], "bank_account": EVIL[2]}
    doc = statement_doc(EVIL[0], payee)
    _, settle, adjust = rows(statement_csv(doc))
    assert settle[5] == settle[7] == "'" + EVIL[0]  # 食堂名称, 经营者
    assert (adjust[10], adjust[17]) == ("-150", "-¥1.50")  # an adjustment stays a negative number
    _, pay = rows(payout_csv(doc))
    assert pay[:4] == ["'" + EVIL[1], "'" + EVIL[0], "'" + EVIL[3], "'" + EVIL[2]]
    assert pay[4:6] == ["995", "¥9.95"]
    every_cell = [c for r in rows(statement_csv(doc)) + rows(payout_csv(doc)) for c in r]
    assert not [c for c in every_cell if c[:1] in ("=", "+", "@", "\t", "\r")]


@pytest.mark.sqlite_only("the SQLite file and its WAL files (PostgreSQL keeps its own files)")
def test_the_database_and_its_wal_files_are_created_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a usual umask: files would be 0644
    try:
        db = tmp_path / "canteen.sqlite"
        conn = open_db(db)
        with write_txn(conn):
            units.add_unit(conn, "U01", "市财政局", 30_000)
        for path in (db, tmp_path / "canteen.sqlite-wal", tmp_path / "canteen.sqlite-shm"):
            assert mode(path) == 0o600, path
        conn.close()
    finally:
        os.umask(old)


@pytest.mark.sqlite_only("the SQLite file's mode (PostgreSQL keeps its own files)")
def test_an_existing_world_readable_database_is_tightened_on_open(tmp_path: Path) -> None:
    db = tmp_path / "canteen.sqlite"
    open_db(db).close()
    db.chmod(0o644)
    open_db(db).close()
    assert mode(db) == 0o600


def test_init_creates_the_database_and_key_owner_only_and_provision_out_writes_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        runner = CliRunner()
        home = ["--home", str(tmp_path)]
        assert runner.invoke(server_main, [*home, "init"]).exit_code == 0
        assert mode(tmp_path / "server" / "canteen.sqlite") == 0o600
        assert mode(tmp_path / "server" / "server_key.hex") == 0o600
        conn = open_db(tmp_path / "server" / "canteen.sqlite")
        populated(conn, 1_767_672_000_000)
        conn.close()
        out = tmp_path / "t1.json"
        result = runner.invoke(
            server_main, [*home, "provision-terminal", "C01", "--with-secret", "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert mode(out) == 0o600
        config = json.loads(out.read_text())
        assert config["secret_hex"] not in result.output  # the secret went to the file only
        piped = runner.invoke(server_main, [*home, "provision-terminal", "C01", "--with-secret"])
        assert "secret_hex" in piped.stdout and "--out" in piped.stderr
        # the default hands out a one-time enrolment code, never a secret
        code = runner.invoke(server_main, [*home, "provision-terminal", "C01", "--json"])
        assert code.exit_code == 0 and "secret" not in code.stdout and json.loads(code.stdout)["code"]
    finally:
        os.umask(old)


def test_a_broker_password_is_never_printed() -> None:
    url = "mqtt://server:s3cret-pw@broker.example:8883"
    assert redacted_url(url) == "mqtt://server:***@broker.example:8883"
    assert redacted_url("mqtt://127.0.0.1:1883") == "mqtt://127.0.0.1:1883"
    assert "s3cret-pw" not in repr(BrokerAddress.parse(url))
    try:
        BrokerAddress.parse("http://server:s3cret-pw@broker.example")
    except ValueError as exc:
        assert "s3cret-pw" not in str(exc)
    else:
        raise AssertionError("an http URL is not a broker URL")
