"""The clerks' batch jobs on the command line: imports, units, cards, leavers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli.root import main

FIXTURES = Path(__file__).parent / "fixtures" / "registry"


@pytest.fixture
def cli(tmp_path: Path):  # noqa: ANN201
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(main, ["--home", str(tmp_path), *args])
        return result.exit_code, result.stdout, result.stderr

    assert run("init")[0] == 0
    for name, standard in (
        ("市财政局", "300"),
        ("市教育局", "300.00"),
        ("市审计局", "240"),
        ("市人民医院", "360"),
    ):
        assert run("unit", "add", name, "--standard", standard)[0] == 0
    return run


def test_import_canteens_reports_what_it_did_as_json(cli) -> None:  # noqa: ANN001
    code, out, _ = cli("import-canteens", str(FIXTURES / "canteens_seed_bom.csv"), "--json")
    assert code == 0
    assert json.loads(out)["ok"] is True and len(json.loads(out)["created"]) == 4


def test_a_refused_import_lists_each_line_and_exits_2(cli) -> None:  # noqa: ANN001
    code, _, err = cli("import-canteens", str(FIXTURES / "canteens_errors.csv"))
    assert code == 2
    assert "第2行 [" in err and "/ line 2 [" in err and "第6行" in err and "line 6" in err
    # the refusal itself: Chinese first, English on the next line
    assert (
        "错误：导入文件有误，未导入任何数据（import_rejected）\nerror: import refused: nothing was imported"
        in err
    )
    code, out, _ = cli("canteen", "list", "--json")
    assert json.loads(out) == []


def test_a_refused_import_with_json_prints_the_errors_on_stdout(cli) -> None:  # noqa: ANN001
    code, out, _ = cli("import-roster", str(FIXTURES / "roster_errors.csv"), "--json")
    assert code == 2
    body = json.loads(out)
    assert body["ok"] is False and sorted({e["line"] for e in body["errors"]}) == [3, 4, 5, 6, 7]


def test_import_roster_twice_never_duplicates(cli) -> None:  # noqa: ANN001
    assert cli("import-roster", str(FIXTURES / "roster.csv"))[0] == 0
    code, out, _ = cli("import-roster", str(FIXTURES / "roster.csv"), "--json")
    assert code == 0 and json.loads(out)["unchanged"] == 3 and json.loads(out)["new_holders"] == 0
    units = json.loads(cli("unit", "list", "--json")[1])
    assert sum(u["active_holders"] for u in units) == 3


def test_a_clerks_roster_is_limited_to_their_unit(cli) -> None:  # noqa: ANN001
    units = {u["name"]: u["id"] for u in json.loads(cli("unit", "list", "--json")[1])}
    code, _, err = cli("import-roster", str(FIXTURES / "roster.csv"), "--unit", units["市教育局"])
    assert code == 2 and "第2行" in err and "not your unit" in err


def test_a_standard_is_typed_in_yuan_and_shown_in_yuan(cli) -> None:  # noqa: ANN001
    code, out, _ = cli("unit", "add", "市卫健委", "--standard", "312.5")
    assert code == 0 and "¥312.50" in out
    code, _, err = cli("unit", "add", "市统计局", "--standard", "1.234")
    assert code == 2 and "bad_amount" in err


def test_a_shop_price_above_reference_is_refused_on_the_command_line(cli) -> None:  # noqa: ANN001
    cli("import-canteens", str(FIXTURES / "canteens_seed_bom.csv"))
    cid = json.loads(cli("canteen", "list", "--json")[1])[0]["id"]
    code, _, err = cli("canteen", "item-set", cid, "water", "矿泉水", "2.50", "2.00")
    assert code == 2 and "price_above_reference" in err
    code, out, _ = cli("canteen", "item-set", cid, "water", "矿泉水", "2.00", "2.00")
    assert code == 0 and "¥2.00" in out


def test_meal_rules_are_set_from_the_command_line(cli) -> None:  # noqa: ANN001
    cli("import-canteens", str(FIXTURES / "canteens_seed_bom.csv"))
    cid = json.loads(cli("canteen", "list", "--json")[1])[0]["id"]
    code, out, _ = cli(
        "canteen",
        "set",
        cid,
        "--meal",
        "lunch 11:00-13:00 13 15.50",
        "--no-meal",
        "dinner",
        "--outsourced",
        "--operator",
        "湘味餐饮有限公司",
        "--json",
    )
    assert code == 0, out
    data = json.loads(out)
    assert data["config"]["meals"]["lunch"] == {
        "start": "11:00",
        "end": "13:00",
        "price_fen": 1300,
        "visitor_price_fen": 1550,
    }
    assert "dinner" not in data["config"]["meals"] and data["operator"] == "湘味餐饮有限公司"


def test_card_lost_and_replaced_on_the_command_line(cli) -> None:  # noqa: ANN001
    cli("import-roster", str(FIXTURES / "roster.csv"))
    assert json.loads(cli("card", "lost", "04A1B2C3D4", "--json")[1])["status"] == "lost"
    code, out, _ = cli("card", "replace", "04A1B2C3D4", "04NEWCARD", "--json")
    assert code == 0 and json.loads(out)["status"] == "active"
    holder = json.loads(cli("holder", "show", json.loads(out)["holder_id"], "--json")[1])
    assert {c["card_id"]: c["status"] for c in holder["cards"]} == {
        "04A1B2C3D4": "lost",
        "04NEWCARD": "active",
    }


def test_an_active_cardholder_gets_no_refund_on_the_command_line(cli) -> None:  # noqa: ANN001
    cli("import-roster", str(FIXTURES / "roster.csv"))
    code, _, err = cli("refund", "request", "H000001", "--bank-account", "6217003320001234567")
    assert code == 2 and "holder_active" in err


def test_the_directory_prints_meal_times_and_prices(cli) -> None:  # noqa: ANN001
    cli("import-canteens", str(FIXTURES / "canteens_seed_bom.csv"))
    code, out, _ = cli("directory")
    assert code == 0 and "市财经大楼1楼" in out and "中餐 11:30-13:30 ¥12.00" in out
