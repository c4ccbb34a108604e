"""The clerk's side of reversals (冲正, issue 13), through the real ``canteen-server`` CLI:
setting a canteen's operator (PIN typed twice, kept only as a hash the terminals check
offline) and its reversal window, a diner's history with the reversal under its sale, and
``check`` green with reversals, listing one that waits for its sale."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from server.cli.root import main
from server.infra.db import open_db
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock, ms_from_china
from shared.pin_hash import verify_pin_record
from shared.protocol import Reversal, topics
from tests.helpers import populated, sale, signed_batch, signed_reversals, terminal

NOON = ms_from_china("2026-11-26T12:00")


def invoke(home: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--home", str(home), *args], input=input)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    init = invoke(tmp_path / "home", "init", "--json")
    assert init.exit_code == 0, init.output
    conn = open_db(json.loads(init.stdout)["database"])
    populated(conn, NOON)
    conn.close()
    return tmp_path / "home"


def db(home: Path) -> str:
    return str(home / "server" / "canteen.sqlite")


def test_an_operator_and_the_window_are_set_and_the_pin_is_never_kept(home: Path) -> None:
    r = invoke(home, "canteen", "operator-set", "C01", "OP0001", "--name", "王五", input="246810\n246810\n")
    assert r.exit_code == 0, r.output
    assert "246810" not in r.output and "操作员 operator OP0001 王五 已设置" in r.stdout
    assert invoke(home, "canteen", "set", "C01", "--reversal-window", "30").exit_code == 0
    conn = open_db(db(home))
    config = json.loads(conn.execute("SELECT config_json FROM canteens WHERE id = 'C01'").fetchone()[0])
    record = config["operators"]["OP0001"]["pin_hash"]
    assert verify_pin_record(record, "246810") and config["reversal_window_minutes"] == 30
    latest = conn.execute("SELECT changes_json FROM deltas ORDER BY version DESC").fetchone()[0]
    assert record in latest and "246810" not in latest  # the terminals get the hash, never the PIN
    conn.close()
    shown = invoke(home, "canteen", "show", "C01")
    assert "******" in shown.stdout and record not in shown.stdout
    simple = invoke(home, "canteen", "operator-set", "C01", "OP2", "--name", "赵", input="111111\n111111\n")
    assert simple.exit_code == 2 and "operator_pin_too_simple" in simple.stderr
    bad = invoke(home, "canteen", "set", "C01", "--reversal-window", "2000")
    assert bad.exit_code == 2 and "reversal_window_minutes" in bad.stderr
    gone = invoke(home, "canteen", "operator-remove", "C01", "OP0001")
    assert gone.exit_code == 0 and invoke(home, "canteen", "operator-remove", "C01", "OP0001").exit_code == 2


def test_the_history_shows_the_reversal_under_its_sale_and_check_stays_green(home: Path) -> None:
    conn = open_db(db(home))
    creds = terminal(conn, "C01", NOON)
    card, holder = conn.execute("SELECT card_id, holder_id FROM cards ORDER BY card_id").fetchone()
    worker = IngestWorker(conn, FakeClock(NOON + 120_000), lambda *a: True)
    sold = [sale(creds, n, card, fen, NOON + n * 1000) for n, fen in ((1, 800), (2, 1200))]
    worker.process([(topics.sales(creds.terminal_id), signed_batch(creds, sold, NOON))])
    reversals = [
        Reversal(creds.terminal_id, 1, uuid.uuid4().hex, 2, sold[1].uuid, "C01", "OP1", 1200, NOON + 60_000),
        Reversal(creds.terminal_id, 2, uuid.uuid4().hex, 9, "f" * 32, "C01", "OP1", 500, NOON + 60_000),
    ]
    wire = signed_reversals(creds, reversals, NOON)
    worker.process([(topics.reversals(creds.terminal_id), wire)])
    conn.close()
    history = invoke(home, "holder", "history", card)
    assert history.exit_code == 0, history.output
    lines = history.stdout.splitlines()
    assert "¥12.00" in lines[0] and lines[1].strip().startswith("已冲正 reversed 12:01  +¥12.00")
    assert f"{creds.terminal_id}/R1" in lines[1] and "¥8.00" in lines[2]
    as_json = json.loads(invoke(home, "holder", "history", holder, "--json").stdout)
    assert [s["reversed"] for s in as_json] == [True, False]
    check = invoke(home, "check")
    assert check.exit_code == 0, check.output
    assert "冲正 reversals: 已入账 applied 1 待原交易 waiting 1" in check.stdout
    assert f"{creds.terminal_id}/R2 (sale {creds.terminal_id}/9)" in check.stdout
