"""Staff roster import: all or nothing, line-numbered errors, re-import updates, never duplicates."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from server.downstream.deltas import current_version, deltas_since
from server.infra.db import write_txn
from server.registry import roster
from server.registry import units as registry
from shared.errors import DomainError

FIXTURES = Path(__file__).parent / "fixtures" / "registry"


@pytest.fixture
def units(conn: sqlite3.Connection) -> sqlite3.Connection:
    with write_txn(conn):
        registry.add_unit(conn, "U01", "市财政局", 30_000)
        registry.add_unit(conn, "U02", "市教育局", 30_000)
    return conn


def load(conn: sqlite3.Connection, name: str, now_ms: int, **kw: object) -> dict:
    with write_txn(conn):
        return roster.import_roster(conn, (FIXTURES / name).read_bytes(), now_ms, **kw)  # type: ignore[arg-type]


def people(conn: sqlite3.Connection) -> dict[str, tuple]:
    return {
        r["staff_no"]: (r["unit_id"], r["name"], r["bank_account"])
        for r in conn.execute("SELECT * FROM holders")
    }


def cards(conn: sqlite3.Connection) -> dict[str, tuple]:
    return {
        r["card_id"]: (r["staff_no"], r["status"])
        for r in conn.execute(
            "SELECT c.card_id, c.status, h.staff_no FROM cards c JOIN holders h ON h.id = c.holder_id"
        )
    }


def test_a_roster_creates_cardholders_and_their_cards(units, clock) -> None:  # noqa: ANN001
    report = load(units, "roster.csv", clock.now_ms())
    assert report["new_holders"] == 3 and report["issued"] == 3
    assert people(units) == {
        "CZ001": ("U01", "王伟", None),
        "CZ002": ("U01", "李娜", None),
        "JY001": ("U02", "张敏", None),
    }
    assert cards(units) == {
        "04A1B2C3D4": ("CZ001", "active"),
        "04A1B2C3D5": ("CZ002", "active"),
        "04A1B2C3D6": ("JY001", "active"),
    }


def test_new_cardholders_and_cards_reach_terminals_in_one_delta(units, clock) -> None:  # noqa: ANN001
    v = current_version(units)
    load(units, "roster.csv", clock.now_ms())
    [delta] = deltas_since(units, v)
    kinds = sorted(c["kind"] for c in delta.changes)
    assert kinds == ["card"] * 3 + ["holder"] * 3
    assert all(c["subsidy_fen"] == 0 and not c["blocked"] for c in delta.changes if c["kind"] == "holder")


def test_reimporting_the_same_roster_changes_nothing(units, clock) -> None:  # noqa: ANN001
    load(units, "roster.csv", clock.now_ms())
    before, v = (people(units), cards(units)), current_version(units)
    report = load(units, "roster.csv", clock.now_ms())
    assert report["unchanged"] == 3 and report["new_holders"] == report["issued"] == 0
    assert (people(units), cards(units)) == before
    assert current_version(units) == v


def test_reimport_updates_names_and_adds_newcomers_with_another_header_spelling(units, clock) -> None:  # noqa: ANN001
    load(units, "roster.csv", clock.now_ms())
    ids = {r["staff_no"]: r["id"] for r in units.execute("SELECT id, staff_no FROM holders")}
    report = load(units, "roster_bom_variants.csv", clock.now_ms())
    assert (report["renamed"], report["new_holders"], report["bank_accounts"]) == (1, 1, 1)
    got = people(units)
    assert got["CZ002"] == ("U01", "李娜娜", None)
    assert got["CZ001"] == ("U01", "王伟", "6217003320001234567")
    assert got["CZ003"] == ("U01", "刘洋", None)
    assert got["JY001"] == ("U02", "张敏", None)  # not in the file: left alone
    assert {
        r["staff_no"]: r["id"]
        for r in units.execute("SELECT id, staff_no FROM holders")
        if r["staff_no"] in ids
    } == ids


def test_a_new_card_number_replaces_the_persons_active_card(units, clock) -> None:  # noqa: ANN001
    load(units, "roster.csv", clock.now_ms())
    text = (FIXTURES / "roster.csv").read_text().replace("04A1B2C3D4", "04FFFFFFF1")
    v = current_version(units)
    with write_txn(units):
        report = roster.import_roster(units, text, clock.now_ms())
    assert (report["issued"], report["retired"]) == (1, 1)
    got = cards(units)
    assert got["04A1B2C3D4"] == ("CZ001", "retired") and got["04FFFFFFF1"] == ("CZ001", "active")
    [delta] = deltas_since(units, v)
    assert {(c["card_id"], c["status"]) for c in delta.changes} == {
        ("04A1B2C3D4", "retired"),
        ("04FFFFFFF1", "active"),
    }


def test_reimport_never_brings_a_lost_card_back(units, clock) -> None:  # noqa: ANN001
    from server.registry import cards as card_ops

    load(units, "roster.csv", clock.now_ms())
    with write_txn(units):
        card_ops.report_lost(units, "04A1B2C3D4", clock.now_ms())
    load(units, "roster.csv", clock.now_ms())
    assert cards(units)["04A1B2C3D4"] == ("CZ001", "lost")


def test_a_roster_with_errors_is_refused_whole_with_each_line_and_reason(units, clock) -> None:  # noqa: ANN001
    with pytest.raises(DomainError) as err:
        load(units, "roster_errors.csv", clock.now_ms())
    assert err.value.code == "import_rejected"
    got = {(e["line"], e["code"]) for e in err.value.context["errors"]}
    assert got == {
        (3, "not_found"),
        (4, "invalid_input"),
        (5, "already_exists"),
        (6, "already_exists"),
        (7, "invalid_input"),
    }
    details = {e["line"]: e["detail"] for e in err.value.context["errors"]}
    assert "市未知局" in details[3] and "line 2" in details[5] and "line 2" in details[6]
    assert units.execute("SELECT count(*) FROM holders").fetchone()[0] == 0
    assert units.execute("SELECT count(*) FROM cards").fetchone()[0] == 0


def test_a_card_that_belongs_to_someone_else_is_refused(units, clock) -> None:  # noqa: ANN001
    load(units, "roster.csv", clock.now_ms())
    text = "单位名称,姓名,工号,卡号\n市教育局,赵磊,JY002,04A1B2C3D4\n"
    with pytest.raises(DomainError) as err, write_txn(units):
        roster.import_roster(units, text, clock.now_ms())
    [problem] = err.value.context["errors"]
    assert (problem["line"], problem["code"]) == (2, "card_registered_elsewhere")
    # issue 11: a clerk of 市教育局 learns nothing about 市财政局's people from the refusal
    shown = json.dumps(err.value.to_json("zh") | err.value.to_json("en") | problem, ensure_ascii=False)
    for secret in ("U01", "市财政局", "CZ001", "王伟"):
        assert secret not in shown
    assert "已在其他单位登记" in problem["message"] or "elsewhere" in problem["message"]


def test_a_card_of_a_colleague_in_the_same_unit_names_the_colleague(units, clock) -> None:  # noqa: ANN001
    load(units, "roster.csv", clock.now_ms())
    text = "单位名称,姓名,工号,卡号\n市财政局,赵磊,CZ009,04A1B2C3D4\n"
    with pytest.raises(DomainError) as err, write_txn(units):
        roster.import_roster(units, text, clock.now_ms())
    [problem] = err.value.context["errors"]
    assert (problem["code"], "CZ001" in problem["detail"]) == ("already_exists", True)


def test_a_clerk_may_import_only_their_own_units_staff(units, clock) -> None:  # noqa: ANN001
    with pytest.raises(DomainError) as err:
        load(units, "roster.csv", clock.now_ms(), unit_scope="U02")
    assert {(e["line"], e["code"]) for e in err.value.context["errors"]} == {
        (2, "forbidden"),
        (3, "forbidden"),
    }
    assert units.execute("SELECT count(*) FROM holders").fetchone()[0] == 0


def test_a_missing_column_is_reported_on_the_header_line(units, clock) -> None:  # noqa: ANN001
    with pytest.raises(DomainError) as err, write_txn(units):
        roster.import_roster(units, "单位名称,姓名,卡号\n市财政局,王伟,04A1\n", clock.now_ms())
    # the column a clerk knows (工号), not the internal key, in both languages
    [problem] = err.value.context["errors"]
    assert (problem["line"], problem["column"]) == (1, "工号")
    assert problem["detail"] == "missing column 工号" and problem["detail_zh"] == "缺少“工号”列"


def test_a_dry_run_reports_and_writes_nothing(units, clock) -> None:  # noqa: ANN001
    report = load(units, "roster.csv", clock.now_ms(), dry_run=True)
    assert report["new_holders"] == 3
    assert units.execute("SELECT count(*) FROM holders").fetchone()[0] == 0


def test_holder_ids_do_not_collide_with_existing_ones(units, clock) -> None:  # noqa: ANN001
    with write_txn(units):
        registry.add_holder(units, "H000002", "U01", "先来", "X1", staff_no="CZ900", now_ms=clock.now_ms())
    load(units, "roster.csv", clock.now_ms())
    ids = [r[0] for r in units.execute("SELECT id FROM holders ORDER BY id")]
    assert len(ids) == len(set(ids)) == 4
