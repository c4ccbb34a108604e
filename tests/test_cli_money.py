"""The money commands of ``canteen-server`` on a real database (dates long past, so the
wall clock never matters)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli.root import main
from server.infra.db import open_db
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock, ms_from_china
from shared.protocol import topics
from tests.helpers import one_holder_books, sale, signed_batch, terminal


@pytest.fixture
def home(tmp_path: Path) -> Path:
    runner = CliRunner()
    assert runner.invoke(main, ["--home", str(tmp_path), "init"]).exit_code == 0
    one_holder_books(tmp_path / "server" / "canteen.sqlite")
    return tmp_path


def run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--home", str(home), *args])
    # stdout when it worked (stderr only says which data folder); the refusal when not
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def sell(home: Path, amount_fen: int, at_ms: int) -> None:
    conn = open_db(home / "server" / "canteen.sqlite")
    creds = terminal(conn, "C01", at_ms)
    IngestWorker(conn, FakeClock(at_ms), lambda *_: True).process(
        [
            (
                topics.sales(creds.terminal_id),
                signed_batch(creds, [sale(creds, 1, "K1", amount_fen, at_ms)], at_ms),
            )
        ]
    )
    conn.close()


def test_allocate_topup_settle_close_year_and_reports(home: Path, tmp_path: Path) -> None:
    code, out = run(home, "allocate", "U01", "2024Q1", "--json")
    assert code == 0, out
    assert (
        json.loads(out)["total_fen"] == 30_000 and json.loads(out)["late"] is True
    )  # allocated today: years late
    code, out = run(home, "topup", "K1", "12.50", "--ref", "CCB-9")
    assert (code, "¥12.50" in out) == (0, True)
    assert run(home, "topup", "K1", "12.50", "--ref", "CCB-9")[0] == 2  # the same bank ref again
    sell(home, 1_000, ms_from_china("2024-01-05T12:00"))
    assert (
        run(home, "operator-set", "湘味餐饮有限公司", "--bank-name", "建设银行", "--bank-account", "4300")[0]
        == 0
    )
    assert run(home, "quality-bands", "C01", "[[90,100],[0,90]]")[0] == 0
    assert run(home, "quality-score", "C01", "2024Q1", "75")[0] == 0

    code, out = run(home, "settle", "2024Q1")
    assert code == 2 and "terminals_behind" in out
    statements, payouts = tmp_path / "st.csv", tmp_path / "pay.csv"
    code, out = run(
        home, "settle", "2024Q1", "--force", "--csv", str(statements), "--payout", str(payouts), "--json"
    )
    assert code == 0, out
    doc = json.loads(out)
    assert (doc["statements"][0]["withheld_fen"], doc["statements"][0]["net_fen"]) == (
        100,
        895,
    )  # fee: 0.5% of 900 = 4.5 -> 5
    rows = list(csv.reader(payouts.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()))
    assert rows[1][:5] == ["湘味餐饮有限公司", "湘味餐饮有限公司", "建设银行", "4300", "895"]
    assert statements.read_text(encoding="utf-8").lstrip("\ufeff").startswith("季度,类型")

    code, out = run(home, "close-year", "2024", "--force", "--refund-to", "city_finance", "--json")
    assert code == 0, out
    assert json.loads(out)["totals"]["refund_fen"] == 29_000

    for args in (
        ["daily", "--date", "2024-01-05"],
        ["quarterly", "--quarter", "2024Q1"],
        ["matrix", "--quarter", "2024Q1"],
        ["allocations", "--quarter", "2024Q1"],
        ["overdrafts"],
        ["blocked"],
        ["quality", "--quarter", "2024Q1"],
        ["clearing", "2024"],
    ):
        code, out = run(home, "report", *args, "--json")
        assert code == 0, (args, out)
        json.loads(out)
    assert (
        json.loads(run(home, "report", "daily", "--date", "2024-01-05", "--json")[1])["totals"]["amount_fen"]
        == 1_000
    )
    code, out = run(home, "check", "--json")
    assert (code, json.loads(out)["ok"]) == (0, True)


def test_a_bad_quarter_is_a_clear_error(home: Path) -> None:
    code, out = run(home, "settle", "2024Q9")
    assert code == 2 and "invalid_input" in out
