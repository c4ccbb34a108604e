"""The operator's day close (日结, issue 13): the Z-report a terminal builds from its
journal, the server keeping it once and comparing it with the sales it holds for the same
sequence numbers — matched, waiting for sales still on their way, or a mismatch with the
stable code ``day_close_mismatch`` — and the whole path through a real server."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from server.cli.root import main
from server.closing import day_closes
from server.closing.day_closes import ServerSide, Tally, compare, parse_close
from server.infra.db import open_db, write_txn
from server.registry import units as registry
from server.sales import quarantine
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock, ms_from_china
from shared.errors import DomainError
from shared.protocol import Item, Sale, topics
from simulator.harness.cluster import Cluster
from simulator.harness.driver import Harness
from simulator.harness.world import demo_world
from simulator.waiting import wait_until
from terminal.devices import Order
from terminal.totals import summarize
from terminal.zreport import ZReport, build, render_zh
from tests.helpers import sale, signed_batch, terminal
from tests.test_quarantine import City

NOON = ms_from_china("2026-11-26T12:00")


def journal_row(s: Sale, status: str = "pending", reason: str | None = None) -> dict[str, Any]:
    """A sale as the terminal's journal holds it."""
    return {
        "seq": s.seq,
        "occurred_at_ms": s.occurred_at_ms,
        "kind": s.kind,
        "meal_period": s.meal_period,
        "method": s.method,
        "amount_fen": s.amount_fen,
        "status": status,
        "reason": reason,
        "sale_json": json.dumps(s.to_dict()),
    }


def z_of(sales: list[Sale], *, number: int = 1, seq_from: int = 1, rows: list[dict] | None = None) -> ZReport:
    s0 = sales[0] if sales else None
    return build(
        number=number,
        terminal_id=s0.terminal_id if s0 else "T1",
        canteen_id=s0.canteen_id if s0 else "C01",
        closed_at_ms=NOON + 3_600_000,
        closed_by="OP1",
        seq_from=seq_from,
        seq_to=seq_from + len(sales) - 1,
        sales=rows if rows is not None else [journal_row(s) for s in sales],
        item_names={"tissue": "抽纸", "water": "矿泉水"},
        declines=2,
        unsent=len(sales),
    )


# --- the terminal's report (pure) ---------------------------------------------------------


def test_the_z_report_sums_the_range_by_period_method_and_item() -> None:
    def s(seq: int, amount: int, **kw: Any) -> Sale:
        return Sale("T1", seq, f"u{seq}", "C1", "C01", amount, NOON + seq, **kw)

    sales = [
        s(1, 1200, meal_period="lunch"),
        s(2, 900, method="qr", kind="shop", items=(Item("tissue", 2, 350, 400), Item("water", 1, 200, 200))),
        s(3, 350, method="qr", kind="shop", items=(Item("tissue", 1, 350, 400),)),
    ]
    rows = [
        journal_row(sales[0], "applied"),
        journal_row(sales[1]),
        journal_row(sales[2], "rejected", "sale_price_mismatch"),
    ]
    z = z_of(sales, rows=rows)
    assert (z.sales.count, z.sales.amount_fen, z.net_fen, z.reversals.amount_fen) == (3, 2450, 2450, 0)
    assert {k: (v.count, v.amount_fen) for k, v in z.by_period.items()} == {
        "lunch": (1, 1200),
        "shop": (2, 1250),
    }
    assert {k: (v.count, v.amount_fen) for k, v in z.by_method.items()} == {
        "card": (1, 1200),
        "qr": (2, 1250),
    }
    assert {k: (v.name, v.qty, v.amount_fen) for k, v in z.shop_items.items()} == {
        "tissue": ("抽纸", 3, 1050),
        "water": ("矿泉水", 1, 200),
    }
    assert (z.held_by_server.count, z.held_by_server.amount_fen) == (1, 350)
    text = render_zh(z)
    for expected in (
        "日结报表 Z0001",
        "消费合计",
        "冲正合计",
        "午餐",
        "扫码",
        "抽纸",
        "服务器待审核",
        "未上传交易",
    ):
        assert expected in text
    assert ZReport.from_json(json.loads(json.dumps(z.to_json()))) == z


# --- the server's comparison (pure) -------------------------------------------------------


def test_the_comparison_waits_for_missing_sales_then_matches_or_names_the_difference() -> None:
    sales = [Sale("T1", n, f"u{n}", "C1", "C01", 500, NOON + n, kind="shop") for n in (1, 2)]
    close = parse_close(z_of(sales).to_json(), "T1", "C01")
    one = ServerSide(received=1, applied=Tally(1, 500), by_method={"card": Tally(1, 500)})
    assert (compare(close, one).status, compare(close, one).missing) == ("waiting", 1)
    both = ServerSide(received=2, applied=Tally(2, 1000), by_method={"card": Tally(2, 1000)})
    assert compare(close, both).status == "matched" and compare(close, both).code is None
    held = ServerSide(
        received=2,
        applied=Tally(1, 500),
        by_method={"card": Tally(1, 500)},
        held={"sale_price_mismatch": Tally(1, 500)},
    )
    result = compare(close, held)
    assert (result.status, result.code) == ("mismatch", "day_close_mismatch")
    assert [d["what"] for d in result.differences] == ["sales", "method:card", "held:sale_price_mismatch"]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"terminal_id": "T2"}, "terminal T1"),
        ({"sales": {"count": 2, "amount_fen": 999}}, "by_period adds up"),
        ({"sales": {"count": 1, "amount_fen": -5}}, "amount_fen"),
        ({"by_method": {"cash": {"count": 2, "amount_fen": 1000}}}, "by_method"),
        ({"seq_to": 1}, "more sales than sequence numbers"),
        ({"seq_from": 0}, "seq_from"),
        ({"net_fen": 1}, "net_fen"),
        ({"business_day": "yesterday"}, "business_day"),
        ({"number": 0}, "number"),
        ({"extra": 1}, "fields"),
    ],
)
def test_a_malformed_close_is_refused_naming_why(change: dict[str, Any], why: str) -> None:
    sales = [Sale("T1", n, f"u{n}", "C1", "C01", 500, NOON + n, kind="shop") for n in (1, 2)]
    body = {**z_of(sales).to_json(), **change}
    with pytest.raises(DomainError) as exc:
        parse_close(body, "T1", "C01")
    assert exc.value.code == "day_close_invalid" and why in exc.value.detail


# --- the server keeps and checks a close (real ingest) -------------------------------------


def test_a_held_sale_is_a_flagged_difference_until_an_admin_accepts_it(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    city = City(tmp_path / "server.db")
    card = city.staff()
    sales = [
        city.new_sale(card, 1200, meal_period="lunch", kind="meal"),
        city.new_sale(card, 700, items=(Item("tissue", 2, 350, 400),)),
        city.new_sale(card, 300, items=(Item("tissue", 1, 300, 400),)),  # not the price in force: held
    ]
    z = z_of(sales).to_json()
    tid = city.creds.terminal_id
    with write_txn(city.conn):  # the close arrives before its sales
        first = day_closes.receive(city.conn, tid, z, city.clock.now_ms())
    assert (first["status"], first["missing"]) == ("waiting", 3)
    city.send(*sales)
    with write_txn(city.conn):  # a resend is answered from what is kept, now compared again
        again = day_closes.receive(city.conn, tid, z, city.clock.now_ms())
    assert (again["status"], again["code"]) == ("mismatch", "day_close_mismatch")
    assert {"what": "held:sale_price_mismatch", "server": {"count": 1, "amount_fen": 300}} in again[
        "differences"
    ]
    with write_txn(city.conn), pytest.raises(DomainError) as exc:
        day_closes.receive(city.conn, tid, {**z, "declines": 9}, city.clock.now_ms())
    assert exc.value.code == "day_close_conflict"
    assert city.conn.execute("SELECT count(*) FROM day_closes").fetchone()[0] == 1
    with write_txn(city.conn):
        quarantine.accept(city.conn, tid, 3, city.clock.now_ms(), "admin")
    [entry] = day_closes.report(city.conn)["closes"]
    assert entry["status"] == "matched" and entry["differences"] == []


def test_report_day_closes_in_the_cli(tmp_path: Path) -> None:
    assert CliRunner().invoke(main, ["--home", str(tmp_path), "init"]).exit_code == 0
    conn = open_db(tmp_path / "server" / "canteen.sqlite")
    at = ms_from_china("2024-01-03T15:00")
    with write_txn(conn):
        registry.add_unit(conn, "U01", "市财政局", 30_000)
        registry.add_canteen(conn, "C01", "财政局食堂", "U01", operator="湘味餐饮有限公司", now_ms=at)
        registry.add_holder(conn, "H1", "U01", "张伟", "K1", now_ms=at)
    creds = terminal(conn, "C01", at)
    sales = [sale(creds, 1, "K1", 500, at), sale(creds, 2, "K1", 700, at + 1)]
    IngestWorker(conn, FakeClock(at), lambda *_: True).process(
        [(topics.sales(creds.terminal_id), signed_batch(creds, sales[:1], at))]
    )
    z1 = z_of(sales[:1]).to_json()
    z2 = z_of(sales[1:], number=2, seq_from=2).to_json()
    with write_txn(conn):
        for z in (z1, z2):
            day_closes.receive(conn, creds.terminal_id, z, at)
    conn.close()
    result = CliRunner().invoke(main, ["--home", str(tmp_path), "report", "day-closes"])
    assert result.exit_code == 0, result.output
    assert "Z0001" in result.stdout and "一致 matched" in result.stdout
    assert "等待上传 waiting：1 笔交易尚未到达服务器" in result.stdout
    data = json.loads(
        CliRunner().invoke(main, ["--home", str(tmp_path), "report", "day-closes", "--json"]).stdout
    )
    assert data["counts"] == {"matched": 1, "waiting": 1, "mismatch": 0}
    bad = CliRunner().invoke(main, ["--home", str(tmp_path), "report", "day-closes", "--date", "soon"])
    assert bad.exit_code == 2 and "invalid_input" in bad.output


# --- through a real server: sales synced, the close sent, offline and back ----------------


@pytest.mark.broker
def test_a_close_made_on_the_device_reaches_the_server_and_an_offline_one_follows(
    broker, tmp_path: Path
) -> None:  # noqa: ANN001
    clock = FakeClock(NOON)
    with Cluster(tmp_path, broker=broker, clock=clock, terminal_prefix=tmp_path.name[-12:]) as cluster:
        conn = cluster.db()
        world = demo_world(conn, clock.now_ms(), diners=4)
        card = next(d.card_id for d in world.diners if d.unit_id == "U01")
        h = Harness(cluster)
        try:
            till = h.add_till("C01", "C01")
            h.settle_down()
            assert till.present_card(card, Order("meal"))["event"] == "approved"
            assert till.present_card(card, Order("shop", (("tissue", 2),)))["event"] == "approved"
            h.settle_down()
            closer = till.loop.day_close
            assert closer is not None
            z1 = closer.close("OP1")
            assert (z1.number, z1.sales.count, z1.sales.amount_fen, z1.unsent) == (1, 2, 1900, 0)
            assert wait_until(lambda: closer.unsent() == 0, 20)
            assert closer.reports()[0]["server"]["status"] == "matched"
            # offline: a sale and a close the server cannot hear of yet
            h.cut(till)
            assert till.present_card(card, Order("shop", (("water", 1),)))["event"] == "approved"
            clock.advance_ms(60_000)
            z2 = closer.close("OP1")
            assert (z2.number, z2.seq_from, z2.seq_to, z2.unsent) == (2, 3, 3, 1)
            closer.poke()
            assert not wait_until(lambda: closer.unsent() == 0, 1)
            h.heal(till)
            h.settle_down()
            closer.poke()
            assert wait_until(lambda: closer.unsent() == 0, 20)
            report = h.admin.get("/api/v1/reports/day-closes?date=2026-11-26")
            assert [(c["number"], c["status"]) for c in report["closes"]] == [(1, "matched"), (2, "matched")]
            assert report["counts"] == {"matched": 2, "waiting": 0, "mismatch": 0}
        finally:
            h.close()
            conn.close()


def test_a_close_of_another_terminal_is_refused(tmp_path: Path) -> None:
    city = City(tmp_path / "server.db")
    s = city.new_sale(city.staff(), 500)
    z = replace(z_of([s]), terminal_id="T-other").to_json()
    with write_txn(city.conn), pytest.raises(DomainError) as exc:
        day_closes.receive(city.conn, city.creds.terminal_id, z, city.clock.now_ms())
    assert exc.value.code == "day_close_invalid"


# --- reversals (冲正) in the close ---------------------------------------------------------


def reversal_row(seq: int, amount_fen: int, method: str = "card", status: str = "new") -> dict[str, Any]:
    """A reversal as the terminal's ``reversals`` table holds it."""
    return {"seq": seq, "amount_fen": amount_fen, "method": method, "status": status}


def z_with_reversals(
    sales: list[Sale], reversals: list[dict[str, Any]], *, rev_seq_from: int = 1, **kw: Any
) -> ZReport:
    z = z_of(sales, **kw)
    return build(
        number=z.number,
        terminal_id=z.terminal_id,
        canteen_id=z.canteen_id,
        closed_at_ms=z.closed_at_ms,
        closed_by=z.closed_by,
        seq_from=z.seq_from,
        seq_to=z.seq_to,
        sales=[journal_row(s) for s in sales],
        item_names={},
        declines=0,
        unsent=0,
        rev_seq_from=rev_seq_from,
        rev_seq_to=rev_seq_from + len(reversals) - 1,
        reversals=reversals,
    )


def test_the_z_report_counts_the_reversals_of_its_range_by_method_and_nets_them() -> None:
    sales = [
        Sale("T1", 1, "u1", "C1", "C01", 1200, NOON + 1, meal_period="lunch"),
        Sale("T1", 2, "u2", "C1", "C01", 800, NOON + 2, method="qr", kind="shop"),
    ]
    z = z_with_reversals(sales, [reversal_row(1, 800, "qr"), reversal_row(2, 1200, "card", "rejected")])
    assert (z.sales.amount_fen, z.reversals.count, z.reversals.amount_fen, z.net_fen) == (2000, 2, 2000, 0)
    assert {k: (v.count, v.amount_fen) for k, v in z.reversals_by_method.items()} == {
        "qr": (1, 800),
        "card": (1, 1200),
    }
    assert (z.reversals_rejected_by_server.count, z.reversals_rejected_by_server.amount_fen) == (1, 1200)
    text = render_zh(z)
    assert "冲正序号 1–2" in text and "冲正按支付方式:" in text and "服务器拒绝冲正" in text
    assert "  冲正合计           2 笔         ¥20.00" in text and "¥0.00" in text
    assert ZReport.from_json(json.loads(json.dumps(z.to_json()))) == z
    close = parse_close(z.to_json(), "T1", "C01")
    assert (close.rev_seq_from, close.rev_seq_to, close.reversals) == (1, 2, Tally(2, 2000))


def test_a_close_made_before_reversals_existed_still_decodes_and_covers_none() -> None:
    sales = [Sale("T1", 1, "u1", "C1", "C01", 500, NOON + 1, kind="shop")]
    old = {k: v for k, v in z_of(sales).to_json().items() if not k.startswith(("rev_seq", "reversals_"))}
    z = ZReport.from_json(old)
    assert (z.rev_seq_from, z.rev_seq_to, z.reversals.count) == (None, None, 0)
    assert "冲正序号 —" in render_zh(z)
    close = parse_close(old, "T1", "C01")
    assert close.expected_reversals == 0
    server = ServerSide(received=1, applied=Tally(1, 500), by_method={"card": Tally(1, 500)})
    assert compare(close, server).status == "matched"
    # an old-style close may not claim reversals it gives no range for
    with pytest.raises(DomainError) as exc:
        parse_close({**old, "reversals": {"count": 1, "amount_fen": 100}, "net_fen": 400}, "T1", "C01")
    assert "rev_seq_from" in exc.value.detail


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"reversals_by_method": {"card": {"count": 1, "amount_fen": 1}}}, "reversals_by_method adds up"),
        ({"rev_seq_to": 0}, "more reversals than reversal sequence numbers"),
        ({"rev_seq_from": 0}, "rev_seq_from"),
        ({"reversals_unsent": -1}, "reversals_unsent"),
    ],
)
def test_a_malformed_reversal_part_is_refused(change: dict[str, Any], why: str) -> None:
    sales = [Sale("T1", 1, "u1", "C1", "C01", 500, NOON + 1, kind="shop")]
    body = {**z_with_reversals(sales, [reversal_row(1, 500)]).to_json(), **change}
    with pytest.raises(DomainError) as exc:
        parse_close(body, "T1", "C01")
    assert exc.value.code == "day_close_invalid" and why in exc.value.detail


def test_the_server_matches_a_reversal_waits_for_one_not_received_and_flags_a_tampered_total(
    tmp_path: Path,
) -> None:
    from tests.test_reversal_server import City as ReversalCity

    city = ReversalCity(tmp_path / "server.db")
    card, tid = city.card(), city.creds.terminal_id
    s1, s2 = city.new_sale(card, 1200), city.new_sale(card, 800)
    assert [r.status for r in city.send(s1, s2)] == ["applied", "applied"]
    city.clock.advance_ms(60_000)
    r1 = city.reversal(s2)
    z = z_with_reversals([s1, s2], [reversal_row(1, 800)]).to_json()
    assert z["net_fen"] == 1200
    with write_txn(city.conn):  # the close arrives before its reversal: waiting for it
        first = day_closes.receive(city.conn, tid, z, city.clock.now_ms())
    assert (first["status"], first["missing"], first["missing_reversals"]) == ("waiting", 0, 1)
    [rr] = city.reverse(r1)
    assert rr.status == "applied"
    [entry] = day_closes.report(city.conn)["closes"]
    assert (entry["status"], entry["net_fen"], entry["differences"]) == ("matched", 1200, [])
    # a close whose reversal total was changed on the way (consistently: it parses) is flagged
    tampered = z_with_reversals([s1, s2], [reversal_row(1, 900)], number=2).to_json()
    with write_txn(city.conn):
        flagged = day_closes.receive(city.conn, tid, tampered, city.clock.now_ms())
    assert (flagged["status"], flagged["code"]) == ("mismatch", "day_close_mismatch")
    assert [d["what"] for d in flagged["differences"]] == ["reversals", "reversal_method:card"]
    assert flagged["differences"][0]["server"] == {"count": 1, "amount_fen": 800}
    # and one the server refused is a named difference
    s3 = city.new_sale(card, 500)
    city.send(s3)
    [refused] = city.reverse(city.reversal(s3, amount_fen=400))
    assert refused.status == "rejected"
    z3 = z_with_reversals([s3], [reversal_row(2, 400)], number=3, seq_from=3, rev_seq_from=2).to_json()
    with write_txn(city.conn):
        third = day_closes.receive(city.conn, tid, z3, city.clock.now_ms())
    assert third["status"] == "mismatch"
    assert f"reversal_rejected:{refused.reason}" in [d["what"] for d in third["differences"]]


def test_a_reversal_of_a_held_sale_matches_the_close_that_counted_both(tmp_path: Path) -> None:
    from tests.test_reversal_server import City as ReversalCity

    city = ReversalCity(tmp_path / "server.db")
    card, tid = city.card(), city.creds.terminal_id
    held = city.new_sale(card, 300, kind="shop", items=(Item("tissue", 1, 300, 400),))
    [r] = city.send(held)
    assert r.status == "quarantined"  # not the price in force: held for review
    [rr] = city.reverse(city.reversal(held))
    assert rr.status == "applied"
    reason = city.conn.execute(
        "SELECT reason FROM sales WHERE terminal_id = ? AND seq = 1", (tid,)
    ).fetchone()[0]
    assert reason == "quarantine_reversed"  # the hold resolved by the reversal: nothing moved
    z = z_with_reversals([held], [reversal_row(1, 300)]).to_json()
    with write_txn(city.conn):
        entry = day_closes.receive(city.conn, tid, z, city.clock.now_ms())
    assert (entry["status"], entry["net_fen"]) == ("matched", 0)


def test_a_close_on_the_device_after_a_reversal_shows_it_and_agrees_with_the_totals(tmp_path: Path) -> None:
    from terminal import reversals
    from terminal.day_close import report_folder
    from tests.test_reversal_terminal import OPERATOR, PIN, Counter

    counter = Counter(tmp_path, FakeClock(ms_from_china("2026-01-06T12:00")))
    try:
        counter.sell()
        counter.sell()
        counter.begin()
        assert counter.shown("请输入操作员密码")  # keys pressed before the card is read are not the PIN
        counter.press(PIN)
        assert counter.shown("选择要冲正的交易")
        counter.press("1")
        assert counter.shown("确认冲正？")
        counter.press("#")
        assert counter.shown("冲正成功")
        closer = counter.loop.day_close
        assert closer is not None
        z1 = closer.close(OPERATOR)
        assert (z1.sales.count, z1.sales.amount_fen, z1.reversals.count, z1.reversals.amount_fen) == (
            2,
            1600,
            1,
            800,
        )
        assert (z1.net_fen, z1.rev_seq_from, z1.rev_seq_to, z1.reversals_unsent) == (800, 1, 1, 1)
        assert "冲正 1笔 净额 ¥8.00" in counter.screen()
        text = (report_folder(counter.t.config) / f"Z0001-{z1.business_day}.txt").read_text("utf-8")
        assert "冲正合计" in text and "冲正序号 1–1" in text and "¥8.00" in text
        kept = json.loads(
            (report_folder(counter.t.config) / f"Z0001-{z1.business_day}.json").read_text("utf-8")
        )
        assert (kept["reversals"], kept["net_fen"], kept["rev_seq_to"]) == (
            {"count": 1, "amount_fen": 800},
            800,
            1,
        )
        # `canteen-terminal totals` of the day says the same (one close covers the whole day)
        totals = counter.t.totals()
        assert (
            totals.total.amount_fen,
            totals.reversals.count,
            totals.reversals.amount_fen,
            totals.net_fen,
        ) == (
            z1.sales.amount_fen,
            z1.reversals.count,
            z1.reversals.amount_fen,
            z1.net_fen,
        )
        # a reversal still being made at the close falls to the next close, once
        counter.sell()
        sale = dict(counter.t.store.conn.execute("SELECT * FROM journal WHERE seq = 3").fetchone())
        r = reversals.record(
            counter.t.store,
            terminal_id=counter.t.config.terminal_id,
            canteen_id=counter.t.config.canteen_id,
            sale=sale,
            operator_card=OPERATOR,
            occurred_at_ms=counter.clock.now_ms(),
            offline=True,
        )
        z2 = closer.close(OPERATOR)
        assert (z2.seq_from, z2.seq_to, z2.rev_seq_from, z2.rev_seq_to, z2.reversals.count) == (3, 3, 2, 1, 0)
        reversals.mark_announced(counter.t.store, r.seq)
        z3 = closer.close(OPERATOR)
        assert (z3.rev_seq_from, z3.rev_seq_to, z3.reversals.amount_fen, z3.net_fen) == (2, 2, 800, -800)
    finally:
        counter.close()


# a sale's terminal status: applied, not answered yet, held for review, or refused
_SALE_STATES = st.sampled_from(
    [("applied", None), ("pending", None), ("rejected", "sale_price_mismatch"), ("rejected", "card_blocked")]
)


@given(
    st.lists(
        st.tuples(
            st.integers(1, 5000),
            st.sampled_from(["card", "qr"]),
            _SALE_STATES,
            st.sampled_from([None, "new", "applied", "rejected"]),  # its reversal, if any
        ),
        max_size=12,
    )
)
def test_the_z_report_and_the_days_totals_differ_only_by_what_the_server_refused(
    day: list[tuple[int, str, tuple[str, str | None], str | None]],
) -> None:
    """One close covering the whole day: the Z-report counts what the till did, the totals
    what stands. Sales: the totals plus those the server held or refused. Reversals: the
    totals plus those the server refused and those of sales it refused (they take nothing
    off a sale that did not stand). Equal when the server refused nothing."""
    sales = [
        {
            **journal_row(
                Sale("T1", n, f"u{n}", "C1", "C01", amount, NOON + n, method=method, kind="shop"),
                status,
                reason,
            ),
            "visitor": 0,
            "offline": 0,
        }
        for n, (amount, method, (status, reason), _) in enumerate(day, 1)
    ]
    revs = [
        {"seq": k, "amount_fen": amount, "method": method, "status": rstatus, "sale_status": status}
        for k, (amount, method, (status, _), rstatus) in enumerate((d for d in day if d[3] is not None), 1)
    ]
    z = build(
        number=1,
        terminal_id="T1",
        canteen_id="C01",
        closed_at_ms=NOON + 3_600_000,
        closed_by="OP1",
        seq_from=1,
        seq_to=len(sales),
        sales=sales,
        item_names={},
        declines=0,
        unsent=0,
        rev_seq_from=1,
        rev_seq_to=len(revs),
        reversals=revs,
    )
    t = summarize(
        "2026-11-26", "C01", "T1", sales, [], unsent_sales=0, last_sync_ms=None, online=True, reversals=revs
    )
    refused = t.held_by_server.amount_fen + t.rejected_by_server.amount_fen
    assert z.sales.amount_fen == t.total.amount_fen + refused
    assert z.sales.count == t.total.count + t.held_by_server.count + t.rejected_by_server.count
    of_refused_sales = sum(
        r["amount_fen"] for r in revs if r["sale_status"] == "rejected" and r["status"] != "rejected"
    )
    assert (
        z.reversals.amount_fen
        == t.reversals.amount_fen + z.reversals_rejected_by_server.amount_fen + of_refused_sales
    )
    if not refused and not z.reversals_rejected_by_server.count:
        assert (z.sales.amount_fen, z.reversals.amount_fen, z.net_fen) == (
            t.total.amount_fen,
            t.reversals.amount_fen,
            t.net_fen,
        )
