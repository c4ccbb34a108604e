"""``canteen-sim payments``: every payment method through its real device path, in one run.

A broker, the real server and two real terminals (:class:`~simulator.harness.cluster.Cluster`).
Terminal A reads cards with nfcpy on its UDP device, and codes with a serial scanner on a
pseudo-terminal (pyserial); terminal B only has a simulated scanner. The story:

1. an NTAG 424 DNA card (emulated, SUN on) pays; a UID-only copy of it is refused;
2. the diner's phone page code (from the server's API) pays, once;
3. a digital RMB wallet code pays through the simulated gateway;
4. the same QR code shown again at terminal B is approved there (B cannot know) — the
   server records the double spend and revokes the credential on every terminal;
5. terminal A loses its network: digital RMB is refused with the Chinese notice, a fresh
   card tap still pays offline;
6. the network comes back, everything drains, and the takings per payment method are shown.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import tty
from typing import Any

from hardware.nfc import EmulatedCard
from hardware.ntag424 import SunKeys
from server.infra.db import write_txn
from server.registry import funds
from server.registry import units as registry
from shared.clock import FakeClock, ms_from_china
from shared.ecny_gateway import SimulatedGateway
from shared.money import format_fen
from simulator.harness.cluster import Cluster
from simulator.harness.world import demo_world
from simulator.waiting import wait_until
from terminal.agent import OFFLINE_BANNER
from terminal.devices import DeviceLoop, Order

MASTER = bytes(range(32))
UID = bytes.fromhex("04A1B2C3D4E5F6")
DAY_MS = 86_400_000


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_payments_demo(broker: str = "embedded") -> dict[str, Any]:
    clock = FakeClock(ms_from_china("2026-11-26T12:00"))
    steps: list[dict[str, Any]] = []
    master_fd, slave_fd = os.openpty()
    tty.setraw(slave_fd)
    udp = _free_udp_port()
    with Cluster(broker=broker, clock=clock, terminal_prefix=f"PAY{os.getpid()}") as cluster:
        conn = cluster.db()
        demo_world(conn, clock.now_ms(), diners=6)
        with write_txn(conn):
            registry.add_holder(conn, "H-NFC", "U01", "周明", UID.hex().upper(), now_ms=clock.now_ms())
            funds.topup(conn, UID.hex().upper(), 5000, clock.now_ms(), ref="demo-nfc")
        conn.close()
        cred = cluster.http("POST", "/api/v1/qr/credentials", {"card_id": "C00002"})
        a = cluster.add_terminal(
            "C01",
            sun_master_key_hex=MASTER.hex(),
            reader=f"nfc:udp:localhost:{udp}",
            qr_scanner=f"serial:{os.ttyname(slave_fd)},9600,cr",
            ecny_gateway="simulated",  # the demo's fake wallets: chosen explicitly, never by default
        )
        b = cluster.add_terminal("C01", qr_scanner="simulated")
        if not cluster.wait_synced(30):
            raise RuntimeError("terminals did not sync")
        gateway = SimulatedGateway(clock)
        wallet = gateway.add_wallet("W-visitor", 10_000)
        loop_a = DeviceLoop.from_config(a.terminal, a.config, order=lambda: Order("meal"))
        loop_a.cashier.gateway = gateway  # type: ignore[union-attr]  # one gateway shared with the server
        cluster.server.app.extensions["ecny_gateway"] = gateway  # type: ignore[union-attr]
        gateway.notify = lambda body, sig: cluster.server.app.test_client().post(  # type: ignore[union-attr]
            "/api/v1/ecny/notify", data=body, headers={"X-Ecny-Signature": sig}
        )
        loop_b = DeviceLoop.from_config(b.terminal, b.config, order=lambda: Order("shop", (("water", 1),)))
        loop_a.start()
        loop_b.start()

        def step(name: str, terminal: Any, action: Any, done: Any) -> None:
            before = len(terminal.display.screens)
            action()
            ok = wait_until(lambda: len(terminal.display.screens) > before and done(), 15)
            screen = terminal.display.last
            steps.append(
                {
                    "step": name,
                    "terminal": terminal.config.terminal_id,
                    "tone": screen.tone if screen else "?",
                    "display": list(screen.lines) if screen else [],
                    "completed": ok,
                }
            )
            clock.advance_ms(20_000)

        def lay_card(card: EmulatedCard) -> None:
            # a diner holds the card on the reader until it beeps (a new screen), not for a
            # fixed time: the reader may be reopening after the previous card left
            before = len(a.terminal.display.screens)
            stop = threading.Event()
            th = threading.Thread(target=card.serve, args=(stop,), daemon=True)
            th.start()
            wait_until(lambda: len(a.terminal.display.screens) > before, 10)
            stop.set()
            th.join(5)
            time.sleep(2.1)  # taken away (past the reader's debounce)

        def scan(text: str) -> None:
            os.write(master_fd, text.encode() + b"\r")

        phone = cred["page_path"].replace("/qr/", "/api/v1/qr/code/")
        keys = SunKeys.from_master(MASTER)
        assert loop_a.scanner is not None and loop_a.scanner.ready.wait(5)  # type: ignore[attr-defined]
        step(
            "NTAG 424 card (SUN)",
            a.terminal,
            lambda: lay_card(EmulatedCard(udp, UID, sun=(keys, "https://c.example/c"))),
            lambda: True,
        )
        step("UID-only copy of that card", a.terminal, lambda: lay_card(EmulatedCard(udp, UID)), lambda: True)
        code = cluster.http("GET", phone)["code"]
        step("phone QR code", a.terminal, lambda: scan(code), lambda: True)
        step("same QR code again", a.terminal, lambda: scan(code), lambda: True)
        step(
            "digital RMB wallet code",
            a.terminal,
            lambda: scan(gateway.payment_code("W-visitor")),
            lambda: True,
        )
        step("same QR code at terminal B", b.terminal, lambda: loop_b.scanner.present(code), lambda: True)  # type: ignore[union-attr]
        a.cut()
        # offline once the agent has put up its notice (at the end of its step, after the link
        # went down): a scan before it could read the notice as its answer (a slow machine did)
        wait_until(lambda: _first_line(a.terminal) == OFFLINE_BANNER, 15)
        step(
            "digital RMB while offline",
            a.terminal,
            lambda: scan(gateway.payment_code("W-visitor")),
            lambda: True,
        )
        step(
            "NTAG 424 card while offline (shop sale)",
            a.terminal,
            lambda: (
                setattr(loop_a, "order", lambda: Order("shop", (("tissue", 1),))),
                lay_card(EmulatedCard(udp, UID, sun=(keys, "https://c.example/c"), counter=5)),
            ),
            lambda: True,
        )
        a.heal()
        drained = cluster.drain(60)
        loop_a.stop()
        loop_b.stop()
        wait_until(
            lambda: (
                a.terminal.identify.qr.key("H00002") is not None
                and a.terminal.identify.qr.key("H00002").expires_at_ms <= clock.now_ms()
            ),
            15,
        )
        totals = cluster.http(
            "GET",
            f"/api/v1/ecny/totals?canteen_id=C01&from_ms={clock.now_ms() - DAY_MS}"
            f"&to_ms={clock.now_ms() + DAY_MS}",
        )
        incidents = cluster.http("GET", "/api/v1/qr/incidents")
        audit = cluster.audit()
        revoked = a.terminal.identify.qr.key("H00002")
    os.close(master_fd)
    os.close(slave_fd)
    return {
        "steps": steps,
        "drained": drained,
        "totals": totals,
        "incidents": [
            {k: i[k] for k in ("kind", "first_sale", "sale", "amount_fen", "action")} for i in incidents
        ],
        "credential_revoked_on_terminal_a": bool(revoked and revoked.expires_at_ms <= clock.now_ms()),
        "wallet_left_fen": wallet.balance_fen,
        "audit": {k: v for k, v in audit.to_json().items() if k != "mismatch_details"},
    }


def _first_line(terminal: Any) -> str:
    screen = terminal.display.last
    return screen.lines[0] if screen and screen.lines else ""


def render_payments(result: dict[str, Any]) -> str:
    lines = ["食堂一卡通 支付方式演示 · payment methods demo", ""]
    for s in result["steps"]:
        mark = {"ok": "✔", "error": "✘"}.get(s["tone"], "·")
        lines.append(f"  {s['step']:<44} {s['terminal']:<14} {mark} {' | '.join(s['display'])}")
    lines.append("")
    lines.append("  各支付方式 takings per method (C01):")
    for method, m in sorted(result["totals"]["methods"].items()):
        lines.append(f"    {method:<6} {m['count']:>3} 笔  {format_fen(m['amount_fen']):>10}")
    lines.append(
        f"    数字人民币退款 ecny refunds {format_fen(result['totals']['ecny_refunds']['amount_fen'])}"
    )
    for i in result["incidents"]:
        lines.append(
            f"  异常 incident [{i['kind']}] {i['first_sale']} & {i['sale']} "
            f"{format_fen(i['amount_fen'])}: {i['action']}"
        )
    lines.append(f"  凭证已在终端A停用 credential revoked on A: {result['credential_revoked_on_terminal_a']}")
    audit = result["audit"]
    ok = audit["approved"] == audit["applied"] and audit["pending"] == 0 and audit["mismatches"] == 0
    lines.append(
        f"  {'✔ 全部一致 all consistent' if ok else '✘ 不一致 INCONSISTENT'} "
        f"(approved {audit['approved']}, applied {audit['applied']}, ledger sum {audit['ledger_sum_fen']})"
    )
    return "\n".join(lines)
