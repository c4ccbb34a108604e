"""A clerk's first day with ``canteen-server`` (issue 12): each trap, through the real CLI.

Every command says which data folder it works on and refuses one without a database;
``init`` writes a commented ``config.py``; refusals are Chinese first, English beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from server.cli.root import main

ROOT = Path(__file__).resolve().parent.parent


def invoke(home: Path | None, *args: str, env: dict[str, str] | None = None) -> Result:
    prefix = ["--home", str(home)] if home is not None else []
    return CliRunner().invoke(main, [*prefix, *args], env=env)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    assert invoke(tmp_path / "home", "init").exit_code == 0
    return tmp_path / "home"


# -- the data folder ---------------------------------------------------------------------------


def test_init_writes_a_commented_config_py_and_keeps_an_existing_one(tmp_path: Path) -> None:
    result = invoke(tmp_path, "init", "--json")
    assert result.exit_code == 0, result.output
    config = tmp_path / "server" / "config.py"
    data = json.loads(result.stdout)
    assert data["config"] == str(config) and data["config_created"] is True
    text = config.read_text(encoding="utf-8")
    for setting in ("DATABASE", "SERVER_KEY_FILE", "BROKER_URL", "YEAR_END_REFUND_TO", "ECNY_GATEWAY"):
        assert f"# {setting} = " in text
    namespace: dict[str, object] = {}
    exec(compile(text, str(config), "exec"), namespace)  # all commented out: sets nothing
    assert not [k for k in namespace if k.isupper()]
    config.write_text('YEAR_END_REFUND_TO = "city_finance"\n', encoding="utf-8")
    again = invoke(tmp_path, "init", "--json")
    assert json.loads(again.stdout)["config_created"] is False
    assert config.read_text(encoding="utf-8") == 'YEAR_END_REFUND_TO = "city_finance"\n'


def test_config_py_is_read_by_the_commands(home: Path) -> None:
    (home / "server" / "config.py").write_text('YEAR_END_REFUND_TO = "nowhere"\n', encoding="utf-8")
    result = invoke(home, "close-year", "2020", "--force")
    assert result.exit_code == 2 and "refund_to must be one of" in result.stderr


def test_every_command_says_which_data_folder_it_uses(home: Path) -> None:
    result = invoke(home, "unit", "list")
    assert result.exit_code == 0
    assert result.stderr == f"数据目录 / data folder: {home}\n"
    assert result.stdout == "(none)\n"


def test_a_folder_without_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    for args in (("unit", "list"), ("check",), ("report", "daily")):
        result = invoke(tmp_path / "nowhere", *args)
        assert result.exit_code == 2, result.output
        assert f"数据目录 / data folder: {tmp_path / 'nowhere'}" in result.stderr
        assert (
            "错误：数据目录中没有数据库：请先运行 canteen-server init，或设置 CANTEEN_HOME" in result.stderr
        )
        assert "error: no database in the data folder: run canteen-server init first" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_without_home_or_canteen_home_it_refuses_instead_of_creating_var(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CANTEEN_HOME"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", "from server.cli import main; main()", "unit", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"数据目录 / data folder: {tmp_path / 'var'}" in proc.stderr
    assert "canteen-server init" in proc.stderr and "CANTEEN_HOME" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "var").exists()


def test_canteen_home_names_the_folder(home: Path) -> None:
    result = invoke(None, "unit", "list", env={"CANTEEN_HOME": str(home)})
    assert result.exit_code == 0 and str(home) in result.stderr


def test_help_needs_no_data_folder(tmp_path: Path) -> None:
    result = invoke(tmp_path / "nowhere", "unit", "list", "--help")
    assert result.exit_code == 0 and "数据目录" not in result.output


# -- the broker's data folder ---------------------------------------------------------------------


def test_mosquitto_config_keeps_the_broker_data_in_the_data_folder(tmp_path: Path) -> None:
    assert invoke(tmp_path, "init").exit_code == 0  # the broker's users come from the database
    result = invoke(tmp_path, "mosquitto-config", "--port", "1884")
    assert result.exit_code == 0, result.output
    assert f"persistence_location {tmp_path / 'mosquitto'}/" in result.stdout
    assert "/var/lib/mosquitto" not in result.stdout and "listener 1884" in result.stdout
    assert (tmp_path / "mosquitto").is_dir()
    other = tmp_path / "broker" / "data"
    result = invoke(tmp_path, "mosquitto-config", "--data-dir", str(other))
    assert f"persistence_location {other}/" in result.stdout and other.is_dir()


# -- money commands: dates, refusals, reports ------------------------------------------------------


@pytest.fixture
def books(home: Path) -> Path:
    """One unit (U01, ¥300 a quarter) with a canteen and one cardholder (card K1), in 2024."""
    from tests.helpers import one_holder_books

    one_holder_books(home / "server" / "canteen.sqlite")
    return home


def test_settling_an_open_quarter_names_its_end_in_beijing_time(books: Path) -> None:
    result = invoke(books, "settle", "2099Q4")
    assert result.exit_code == 2
    assert (
        "错误：该期间尚未结束，不能结账（period_open）：2099Q4 于北京时间 2100-01-01 00:00 结束"
        in result.stderr
    )
    assert "error: period has not ended yet: 2099Q4 ends at 2100-01-01 00:00 (Beijing time)" in result.stderr
    assert "4102416000000" not in result.stderr


def test_close_year_with_nothing_to_clear_is_refused_unless_forced(books: Path) -> None:
    result = invoke(books, "close-year", "2020")
    assert result.exit_code == 2
    assert (
        "错误：该年度没有可清零的补贴，未执行清零（确需执行请加 --force）（nothing_to_clear）"
        in result.stderr
    )
    assert "error: nothing to clear for that year; nothing was done" in result.stderr
    assert invoke(books, "report", "clearing", "2020").exit_code == 2  # nothing was recorded
    forced = invoke(books, "close-year", "2020", "--force")
    assert forced.exit_code == 0 and "¥0.00" in forced.stdout


def test_report_settlement_shows_a_settled_quarters_statements(books: Path) -> None:
    result = invoke(books, "report", "settlement", "2024Q1")
    assert result.exit_code == 2
    assert "（not_found）：2024Q1 尚未结算（先运行 settle 2024Q1）" in result.stderr
    assert "error: not found: 2024Q1 is not settled yet" in result.stderr
    settled = invoke(books, "settle", "2024Q1", "--force")
    assert settled.exit_code == 0, settled.output
    shown = invoke(books, "report", "settlement", "2024Q1")
    assert shown.exit_code == 0 and "C01 财政局食堂" in shown.stdout and "应付" in shown.stdout
    assert json.loads(invoke(books, "report", "settlement", "2024Q1", "--json").stdout)["quarter"] == "2024Q1"
    assert "settlement" in invoke(books, "report", "--help").stdout


def test_report_quality_shows_an_unscored_canteen_as_a_dash(books: Path) -> None:
    result = invoke(books, "report", "quality", "2024Q1")
    assert result.exit_code == 0
    assert "评分 未评分 —" in result.stdout and "服务 — 菜品 —" in result.stdout
    assert "None" not in result.stdout


def test_report_allocations_speaks_chinese(books: Path) -> None:
    missing = invoke(books, "report", "allocations", "2024Q1").stdout
    assert "U01 市财政局: 逾期未拨付 ¥0.00" in missing and "missing" not in missing
    assert invoke(books, "allocate", "U01", "2024Q1").exit_code == 0
    late = invoke(books, "report", "allocations", "2024Q1").stdout
    assert "U01 市财政局: 逾期拨付 ¥300.00" in late and "late" not in late


def test_report_quarters_are_positional_like_settle_and_allocate(books: Path) -> None:
    positional = invoke(books, "report", "quarterly", "2024Q1")
    assert positional.exit_code == 0 and "季报 quarterly 2024Q1" in positional.stdout
    assert invoke(books, "report", "quarterly", "--quarter", "2024Q1").stdout == positional.stdout
    assert "--quarter" not in invoke(books, "report", "quarterly", "--help").stdout
    assert "dining matrix 2024Q1" in invoke(books, "report", "matrix", "2024Q1").stdout


# -- amounts as people type them -------------------------------------------------------------------


def test_a_negative_amount_is_refused_in_both_languages(books: Path) -> None:
    result = invoke(books, "topup", "K1", "-5")
    assert result.exit_code == 2
    assert "错误：金额必须大于零（amount_not_positive）：“-5”" in result.stderr
    assert "error: the amount must be positive: '-5'" in result.stderr
    assert "No such option" not in result.output
    zero = invoke(books, "topup", "K1", "0")
    assert zero.exit_code == 2 and "amount_not_positive" in zero.stderr
    price = invoke(books, "canteen", "item-set", "C01", "water", "水", "-1", "2")
    assert price.exit_code == 2 and "amount_not_positive" in price.stderr
    standard = invoke(books, "unit", "add", "市统计局", "--standard", "-300")
    assert standard.exit_code == 2 and "此处可以为零，但不能为负数" in standard.stderr


@pytest.mark.parametrize("typed", ["¥50", "￥50", "50元", "¥50.00元", "５０", "50"])
def test_yuan_is_accepted_with_the_currency_sign_or_yuan(books: Path, typed: str) -> None:
    result = invoke(books, "topup", "K1", typed, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["amount_fen"] == 5000


# -- finding the people an import created ------------------------------------------------------------


@pytest.fixture
def staff(home: Path) -> Path:
    for name in ("市财政局", "市教育局"):
        assert invoke(home, "unit", "add", name, "--standard", "300").exit_code == 0
    roster = home / "名单.csv"
    roster.write_text(
        "单位名称,姓名,工号,卡号\n市财政局,王伟,001,04A1B2C3D4\n市财政局,李娜,002,04A1B2C3D5\n"
        "市教育局,王芳,001,04A1B2C3D6\n",
        encoding="utf-8",
    )
    return home


def test_import_roster_prints_the_holder_ids_it_created_and_updated(staff: Path) -> None:
    result = invoke(staff, "import-roster", str(staff / "名单.csv"))
    assert result.exit_code == 0, result.output
    assert "新增 new H000001 王伟 工号 001 卡号 card 04A1B2C3D4" in result.stdout
    assert "新增 new H000003 王芳 工号 001 卡号 card 04A1B2C3D6" in result.stdout
    (staff / "名单.csv").write_text(
        "单位名称,姓名,工号,卡号\n市财政局,王小伟,001,04A1B2C3D4\n", encoding="utf-8"
    )
    again = invoke(staff, "import-roster", str(staff / "名单.csv"), "--json")
    assert json.loads(again.stdout)["holders"] == [
        {"id": "H000001", "name": "王小伟", "staff_no": "001", "card_id": None, "created": False}
    ]


def test_holder_find_by_name_staff_number_or_card(staff: Path) -> None:
    assert invoke(staff, "import-roster", str(staff / "名单.csv")).exit_code == 0
    by_name = invoke(staff, "holder", "find", "王")
    assert by_name.exit_code == 0
    assert "H000001\t王伟\tU0001/001\t在职 active\t卡 cards 04A1B2C3D4" in by_name.stdout
    assert "H000003\t王芳" in by_name.stdout and "李娜" not in by_name.stdout
    assert [h["id"] for h in json.loads(invoke(staff, "holder", "find", "001", "--json").stdout)] == [
        "H000001",
        "H000003",
    ]
    one_unit = json.loads(invoke(staff, "holder", "find", "001", "--unit", "U0002", "--json").stdout)
    assert [h["name"] for h in one_unit] == ["王芳"]
    assert invoke(staff, "holder", "find", "04a1b2c3d5").stdout.startswith("H000002\t李娜")
    assert invoke(staff, "holder", "find", "赵").stdout == "(未找到 none found)\n"


def test_holder_show_takes_a_card_number_or_staff_number(staff: Path) -> None:
    assert invoke(staff, "import-roster", str(staff / "名单.csv")).exit_code == 0
    by_card = invoke(staff, "holder", "show", "04A1B2C3D5")
    assert by_card.exit_code == 0 and by_card.stdout.startswith("H000002 李娜 U0001/002")
    assert invoke(staff, "holder", "show", "002").stdout == by_card.stdout
    assert invoke(staff, "holder", "show", "H000002").stdout == by_card.stdout
    ambiguous = invoke(staff, "holder", "show", "001")
    assert ambiguous.exit_code == 2
    assert "工号 001 在多个单位中都有（U0001, U0002），请加 --unit 指定单位" in ambiguous.stderr
    assert "used in several units (U0001, U0002): add --unit" in ambiguous.stderr
    assert invoke(staff, "holder", "show", "001", "--unit", "U0002").stdout.startswith("H000003 王芳")
    missing = invoke(staff, "holder", "show", "nobody")
    assert missing.exit_code == 2 and "没有编号、卡号或工号为“nobody”的持卡人" in missing.stderr


# -- the attachment table as a clerk types it ---------------------------------------------------------

CLERK_TABLE = (
    "序号,单位名称,食堂数量,食堂位置,食堂面积（平方米）,餐位数量,用餐人数,餐位标准（早餐/中餐/晚餐）,联系人,联系电话,自备列\n"
    "1,市财政局,1,财政大楼1楼,350,120,300,5/12/10,王芳,0731-28680001,x\n"
)


def test_import_canteens_reads_the_clerks_headers_and_the_meal_standard(staff: Path) -> None:
    table = staff / "信息统计表.csv"
    table.write_text(CLERK_TABLE, encoding="utf-8")
    result = invoke(staff, "import-canteens", str(table))
    assert result.exit_code == 0, result.output
    assert "注意：以下列未导入 / warning: columns not imported: 自备列" in result.stderr
    assert "用餐人数" not in result.stderr  # understood and kept
    assert "新建 new 市财政局食堂（市财政局）:" in result.stdout
    assert "中餐价格 lunch.price_fen: ¥12.00" in result.stdout
    [c] = json.loads(invoke(staff, "canteen", "list", "--json").stdout)
    assert (c["location"], c["dining_area_m2"], c["seats"], c["diners"]) == ("财政大楼1楼", 350.0, 120, 300)
    assert {p: m["price_fen"] for p, m in c["config"]["meals"].items()} == {
        "breakfast": 500,
        "lunch": 1200,
        "dinner": 1000,
    }


def test_reimporting_shows_the_changes_and_keeps_what_the_table_does_not_carry(staff: Path) -> None:
    table = staff / "信息统计表.csv"
    table.write_text(CLERK_TABLE, encoding="utf-8")
    assert invoke(staff, "import-canteens", str(table)).exit_code == 0
    cid = json.loads(invoke(staff, "canteen", "list", "--json").stdout)[0]["id"]
    assert invoke(staff, "canteen", "set", cid, "--meal", "lunch 11:00-13:00 12.00 15.00").exit_code == 0
    table.write_text(CLERK_TABLE.replace("5/12/10", "5/13/10"), encoding="utf-8")

    preview = invoke(staff, "import-canteens", str(table), "--dry-run")
    assert preview.exit_code == 0, preview.output
    assert "（试运行，未写入 dry run, nothing written）" in preview.stdout
    assert f"更新 update {cid} 市财政局食堂:" in preview.stdout
    assert "中餐价格 lunch.price_fen: ¥12.00 → ¥13.00" in preview.stdout
    assert "start" not in preview.stdout and "visitor" not in preview.stdout  # kept, so not listed
    [c] = json.loads(invoke(staff, "canteen", "list", "--json").stdout)
    assert c["config"]["meals"]["lunch"]["price_fen"] == 1200  # a dry run writes nothing

    assert invoke(staff, "import-canteens", str(table)).exit_code == 0
    [c] = json.loads(invoke(staff, "canteen", "list", "--json").stdout)
    assert c["config"]["meals"]["lunch"] == {
        "start": "11:00",
        "end": "13:00",
        "price_fen": 1300,
        "visitor_price_fen": 1500,
    }
    again = invoke(staff, "import-canteens", str(table))
    assert f"未变 unchanged {cid} 市财政局食堂" in again.stdout


def test_a_meal_standard_that_is_not_three_prices_is_refused_in_both_languages(staff: Path) -> None:
    table = staff / "信息统计表.csv"
    table.write_text(CLERK_TABLE.replace("5/12/10", "12"), encoding="utf-8")
    result = invoke(staff, "import-canteens", str(table))
    assert result.exit_code == 2
    assert (
        "第2行 [餐位标准（早餐/中餐/晚餐）] 输入有误：“12”：请按 早餐/中餐/晚餐 填写三个价格" in result.stderr
    )
    assert (
        "line 2 [餐位标准（早餐/中餐/晚餐）]: invalid input: '12': write breakfast/lunch/dinner"
        in result.stderr
    )
    assert json.loads(invoke(staff, "canteen", "list", "--json").stdout) == []


def test_an_unknown_unit_points_to_the_create_units_flag(staff: Path) -> None:
    table = staff / "信息统计表.csv"
    table.write_text(CLERK_TABLE.replace("市财政局", "市统计局"), encoding="utf-8")
    result = invoke(staff, "import-canteens", str(table))
    assert result.exit_code == 2
    assert "单位“市统计局”未登记（先用 unit add 登记，或加 --create-units 一并新建）" in result.stderr
    assert "or use --create-units" in result.stderr and "use create units" not in result.stderr
    assert invoke(staff, "import-canteens", str(table), "--create-units").exit_code == 0
