"""Product barcodes on shop items: the GS1 check digit, the items that carry them, the
terminal telling a scanned barcode from a payment code (issue 13)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.downstream.deltas import current_version, deltas_since
from server.infra.db import write_txn
from server.registry import canteens
from server.registry.canteen_config import validate_config
from shared.barcode import BarcodeError, check_digit, is_valid, normalize, with_check_digit
from shared.errors import DomainError
from shared.paycode import make_code
from shared.protocol.messages import CanteenChange
from terminal.rules import CanteenRules
from terminal.scanned import classify, item_for_barcode

WATER = "6901234567892"  # EAN-13, check digit 2
UPC = "036000291452"  # UPC-A → EAN-13 0036000291452
EAN8 = "96385074"
ITEM = {"name": "矿泉水", "price_fen": 200, "reference_price_fen": 250}

bodies = st.sampled_from([7, 11, 12]).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n))


# --- the pure rule ------------------------------------------------------------------------


@given(bodies)
def test_the_computed_check_digit_appended_makes_a_valid_code(body: str) -> None:
    code = with_check_digit(body)
    assert is_valid(code) and code[-1] == str(check_digit(body))


@given(bodies, st.data())
def test_any_single_digit_changed_makes_the_code_invalid(body: str, data: st.DataObject) -> None:
    code = with_check_digit(body)
    i = data.draw(st.integers(0, len(code) - 1))
    digit = data.draw(st.sampled_from([d for d in "0123456789" if d != code[i]]))
    assert not is_valid(code[:i] + digit + code[i + 1 :])


@given(st.text("0123456789", min_size=11, max_size=11))
def test_a_upc_a_is_the_ean_13_with_a_leading_zero(body: str) -> None:
    upc = with_check_digit(body)
    assert normalize(upc) == "0" + upc and is_valid(normalize(upc))
    assert normalize(normalize(upc)) == normalize(upc)


def test_known_codes_and_refusals() -> None:
    assert normalize(f" {WATER} ") == WATER and normalize(EAN8) == EAN8 and normalize(UPC) == "0" + UPC
    for bad in ["6901234567893", "690123456789", "69012345678921", "6901234567a92", "", "١٢٣٤٥٦٧٨"]:
        with pytest.raises(BarcodeError):
            normalize(bad)


# --- items on the server ------------------------------------------------------------------


def test_an_item_keeps_its_barcodes_normalized_and_a_bad_one_is_refused() -> None:
    cfg = validate_config({"items": {"water": {**ITEM, "barcodes": [WATER, UPC, WATER]}}})
    assert cfg["items"]["water"]["barcodes"] == [WATER, "0" + UPC]
    assert "barcodes" not in validate_config({"items": {"water": ITEM}})["items"]["water"]
    with pytest.raises(DomainError) as err:
        validate_config({"items": {"water": {**ITEM, "barcodes": ["6901234567893"]}}})
    assert err.value.code == "barcode_invalid"


def test_a_barcode_belongs_to_one_item_of_a_canteen() -> None:
    with pytest.raises(DomainError) as err:
        validate_config(
            {"items": {"water": {**ITEM, "barcodes": [WATER]}, "cola": {**ITEM, "barcodes": [WATER]}}}
        )
    assert err.value.code == "barcode_taken"


@pytest.fixture
def canteen(conn: sqlite3.Connection, clock) -> str:  # noqa: ANN001
    from tests.helpers import populated

    populated(conn, clock.now_ms())
    return "C01"


def _items(conn: sqlite3.Connection, cid: str) -> dict:
    return canteens.to_json(canteens.get(conn, cid))["config"]["items"]


def test_set_item_with_barcodes_reaches_the_terminal_and_a_taken_one_changes_nothing(
    conn: sqlite3.Connection,
    canteen: str,
    clock,  # noqa: ANN001
) -> None:
    with write_txn(conn):
        canteens.set_item(conn, canteen, "water", "矿泉水", 200, 250, clock.now_ms(), barcodes=[WATER, UPC])
        canteens.set_item(conn, canteen, "water", "矿泉水", 180, 250, clock.now_ms())  # keeps the barcodes
    assert _items(conn, canteen)["water"]["barcodes"] == [WATER, "0" + UPC]
    version = current_version(conn)
    change = CanteenChange.from_wire(deltas_since(conn, version - 1)[0].changes[0])
    rules = CanteenRules.from_config(canteen, change.config)
    assert item_for_barcode(rules, UPC) == item_for_barcode(rules, WATER) == rules.items["water"]
    assert item_for_barcode(rules, EAN8) is None and item_for_barcode(rules, "junk") is None
    with pytest.raises(DomainError) as err, write_txn(conn):
        canteens.set_item(conn, canteen, "cola", "可乐", 300, 300, clock.now_ms(), barcodes=[WATER])
    assert err.value.code == "barcode_taken"
    assert "cola" not in _items(conn, canteen) and current_version(conn) == version


def test_the_items_file_reads_several_barcodes_and_refuses_a_taken_one_whole(
    conn: sqlite3.Connection,
    canteen: str,
    clock,  # noqa: ANN001
) -> None:
    head = "食堂编号,商品编号,商品名称,售价,参考价,条码\n"
    ok = f"{head}C01,water,矿泉水,2,2.5,{WATER}、{UPC}\nC01,gum,口香糖,1,1,{EAN8}\n"
    with write_txn(conn):
        assert canteens.import_items(conn, ok, clock.now_ms())["items"] == 2
    assert _items(conn, canteen)["water"]["barcodes"] == [WATER, "0" + UPC]
    assert _items(conn, canteen)["gum"]["barcodes"] == [EAN8]
    bad = f"{head}C01,cola,可乐,3,3,{EAN8};6901234567893\nC01,tea,茶,3,3,{WATER}\n"
    with pytest.raises(DomainError) as err, write_txn(conn):
        canteens.import_items(conn, bad, clock.now_ms())
    assert sorted((e["line"], e["code"]) for e in err.value.context["errors"]) == [
        (2, "barcode_invalid"),
        (3, "barcode_taken"),
    ]
    assert not {"cola", "tea"} & set(_items(conn, canteen))
    no_column = "食堂编号,商品编号,商品名称,售价,参考价\nC01,water,矿泉水,1.9,2.5\n"
    with write_txn(conn):
        canteens.import_items(conn, no_column, clock.now_ms())
    assert _items(conn, canteen)["water"] == {**_items(conn, canteen)["water"], "price_fen": 190}
    assert _items(conn, canteen)["water"]["barcodes"] == [WATER, "0" + UPC]


def test_barcodes_over_http(client, conn: sqlite3.Connection, canteen: str, clock) -> None:  # noqa: ANN001
    from server.infra.auth import create_token

    with write_txn(conn):
        admin = {"Authorization": f"Bearer {create_token(conn, 'admin', clock.now_ms())}"}
    url = "/api/v1/canteens/C01/items/water"
    body = {"name": "矿泉水", "price": "2.00", "reference_price": "2.50"}
    resp = client.put(url, json={**body, "barcodes": [UPC]}, headers=admin)
    assert resp.get_json()["barcodes"] == ["0" + UPC]
    bad = client.put(url, json={**body, "barcodes": ["123"]}, headers=admin)
    assert (bad.status_code, bad.get_json()["code"]) == (400, "barcode_invalid")
    assert client.put(url, json={**body, "barcodes": []}, headers=admin).get_json().get("barcodes") is None


def test_item_set_takes_repeated_barcodes_on_the_command_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from server.cli.root import main

    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str, str]:
        r = runner.invoke(main, ["--home", str(tmp_path), *args])
        return r.exit_code, r.stdout, r.stderr

    fixtures = Path(__file__).parent / "fixtures" / "registry"
    assert cli("init")[0] == 0
    for name in ("市财政局", "市教育局", "市审计局", "市人民医院"):
        cli("unit", "add", name, "--standard", "300")
    cli("import-canteens", str(fixtures / "canteens_seed_bom.csv"))
    import json

    cid = json.loads(cli("canteen", "list", "--json")[1])[0]["id"]
    code, out, _ = cli(
        "canteen", "item-set", cid, "water", "矿泉水", "2", "2.5", "--barcode", WATER, "--barcode", EAN8
    )
    assert code == 0 and f"条码 {WATER}、{EAN8}" in out
    code, _, err = cli("canteen", "item-set", cid, "tea", "茶", "2", "2", "--barcode", WATER)
    assert code == 2 and "barcode_taken" in err and "该条码已属于本食堂的另一商品" in err


# --- the terminal -------------------------------------------------------------------------


def test_the_terminal_leaves_out_a_bad_or_doubly_claimed_barcode_and_keeps_the_items() -> None:
    rules = CanteenRules.from_config(
        "C1",
        {
            "items": {
                "a": {**ITEM, "barcodes": [WATER, "123"]},
                "b": {**ITEM, "barcodes": [WATER, EAN8]},
            }
        },
    )
    assert set(rules.items) == {"a", "b"} and rules.by_barcode == {EAN8: "b"}
    assert len(rules.problems) == 2


def test_a_canteen_change_without_barcodes_still_decodes() -> None:
    old = {"kind": "canteen", "canteen_id": "C1", "config": {"items": {"w": ITEM}}}
    rules = CanteenRules.from_config("C1", CanteenChange.from_wire(old).config)
    assert rules.items["w"].barcodes == () and rules.by_barcode == {}


SEED = bytes(range(32))


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (WATER, "barcode"),
        (UPC, "barcode"),
        (EAN8, "barcode"),
        ("6901234567893", "unrecognised"),  # a wrong check digit
        ("012345678901234567", "ecny"),
        ("hello", "unrecognised"),
        ("", "unrecognised"),
    ],
)
def test_classify_tells_what_was_scanned(text: str, kind: str) -> None:
    assert classify(text).kind == kind


def test_barcodes_and_pay_codes_interleaved_on_the_serial_scanner() -> None:
    from hardware.qr_scanner import SerialQrScanner
    from hardware.serial_port import SerialSpec
    from tests.serial_support import raw_pty

    pay = [make_code(SEED, "C00001", n, 1_767_672_000_000) for n in (1, 2)]
    sent = [WATER, pay[0], UPC, "not-a-code", pay[1], EAN8, "6901234567890"]
    with raw_pty() as (master, path):
        scanner = SerialQrScanner(SerialSpec.parse(f"serial:{path},9600,crlf"))
        try:
            assert scanner.ready.wait(30)
            os.write(master, b"".join(s.encode() + b"\r\n" for s in sent))
            got = []
            for _ in sent:
                scan = scanner.read(5.0)
                assert scan is not None, f"only {got} arrived"
                got.append(classify(scan.text))
        finally:
            scanner.close()
    assert [(s.kind, s.text) for s in got] == [
        ("barcode", WATER),
        ("paycode", pay[0]),
        ("barcode", "0" + UPC),
        ("unrecognised", "not-a-code"),
        ("paycode", pay[1]),
        ("barcode", EAN8),
        ("unrecognised", "6901234567890"),
    ]
    assert got[3].reason == "scan_unrecognised"
