"""Identification costs at the terminal (all offline, on the terminal's CPU).

* ``ident.sun_verify_per_s`` — NTAG 424 SUN messages verified (AES decrypt + 2 CMACs).
* ``ident.qr_verify_per_s`` — QR payment codes parsed and Ed25519-verified.
* ``ident.qr_tap_p50_ms`` / ``ident.qr_tap_p99_ms`` — a whole QR payment at the terminal:
  verify, mark used, authorize, journal with its outbox row (synchronous=FULL).
* ``ident.nfc_read_ms`` — from a reader opening nfcpy's UDP device next to a waiting
  emulated NTAG 424 card to its tap with the SUN URL (activation, ISO-DEP, NDEF read);
  median of presentations. Real readers add their own RF timing.
"""

from __future__ import annotations

import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.run import Context, Result
from hardware.nfc import EmulatedCard, NfcCardReader
from hardware.ntag424 import SunKeys, make_url, verify_url
from shared.clock import FakeClock, ms_from_china
from shared.paycode import make_code, parse_code, public_key_hex, signature_ok
from shared.protocol import ServerKey
from shared.protocol.messages import decode_changes
from terminal.agent import Terminal
from terminal.authorize import TapRequest
from terminal.config import TerminalConfig

UID = bytes.fromhex("04A1B2C3D4E5F6")
SEED = bytes(range(32))


def sun_verify(ctx: Context, n: int = 20_000) -> list[Result]:
    keys = SunKeys.from_master(bytes(32))
    urls = [make_url("https://c.example/c", keys, UID, i) for i in range(1000)]
    t0 = time.perf_counter()
    for i in range(n):
        verify_url(keys, urls[i % 1000])
    rate = n / (time.perf_counter() - t0)
    return [Result("ident.sun_verify_per_s", round(rate), "msg/s", {"messages": n})]


def qr_verify(ctx: Context, n: int = 10_000) -> list[Result]:
    pub = public_key_hex(SEED)
    codes = [make_code(SEED, "C00001", i, 1_767_672_000_000) for i in range(1000)]
    t0 = time.perf_counter()
    for i in range(n):
        assert signature_ok(parse_code(codes[i % 1000]), pub)
    rate = n / (time.perf_counter() - t0)
    return [Result("ident.qr_verify_per_s", round(rate), "codes/s", {"codes": n})]


def _terminal(tmp: Path, clock: FakeClock):  # noqa: ANN202
    cfg = TerminalConfig(
        terminal_id="T-bench",
        canteen_id="C01",
        secret_hex="00" * 32,
        server_public_key=ServerKey.generate().public_hex,
        broker_url="mqtt://127.0.0.1:1",
        server_url="http://127.0.0.1:1",
        db_path=str(tmp / "t.sqlite"),
    )
    t = Terminal(cfg, clock)
    lunch = {"start": "11:30", "end": "13:30", "price_fen": 1, "visitor_price_fen": None}
    t.store.apply_changes(
        1,
        decode_changes(
            (
                {
                    "kind": "canteen",
                    "canteen_id": "C01",
                    "config": {"unit_id": "U01", "meal_limit": 10**6, "meals": {"lunch": lunch}},
                },
                {
                    "kind": "holder",
                    "holder_id": "H1",
                    "unit_id": "U01",
                    "subsidy_fen": 10**9,
                    "self_fen": 0,
                    "blocked": False,
                },
                {"kind": "card", "card_id": "C1", "holder_id": "H1", "status": "active"},
                {
                    "kind": "qr_key",
                    "holder_id": "H1",
                    "public_key": public_key_hex(SEED),
                    "expires_at_ms": 2**52,
                    "offline_allowance_fen": 3000,
                },
            )
        ),
    )
    t.sync.assume(in_sync=True)  # never started: no network in this benchmark
    return t


def qr_tap(ctx: Context, n: int = 500) -> list[Result]:
    clock = FakeClock(ms_from_china("2026-01-06T12:00"))
    with tempfile.TemporaryDirectory() as tmp:
        t = _terminal(Path(tmp), clock)
        times = []
        for i in range(n):
            code = make_code(SEED, "C1", i + 1, clock.now_ms())
            t0 = time.perf_counter()
            decision, _ = t.tap(TapRequest(None, method="qr", credential=code))
            times.append((time.perf_counter() - t0) * 1000)
            assert decision.approved, decision.reason
        t.store.close()
    times.sort()
    params = {"taps": n, "journal": "sqlite synchronous=FULL"}
    return [
        Result("ident.qr_tap_p50_ms", round(statistics.median(times), 2), "ms", params),
        Result("ident.qr_tap_p99_ms", round(times[int(0.99 * (n - 1))], 2), "ms", params),
    ]


def nfc_read(ctx: Context, n: int = 20) -> list[Result]:
    keys = SunKeys.from_master(bytes(32))
    times = []
    for _ in range(n):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        stop = threading.Event()
        card = EmulatedCard(port, UID, sun=(keys, "https://c.example/c"))
        th = threading.Thread(target=card.serve, args=(stop,), daemon=True)
        th.start()
        time.sleep(0.1)
        t0 = time.perf_counter()
        reader = NfcCardReader(f"udp:localhost:{port}")
        tap = reader.read(10)
        elapsed = (time.perf_counter() - t0) * 1000
        stop.set()
        reader.close()
        th.join(5)
        if tap is not None and tap.credential:
            times.append(elapsed)
    return [
        Result(
            "ident.nfc_read_ms",
            round(statistics.median(times), 2),
            "ms",
            {"presentations": n, "read": len(times), "device": "nfcpy udp"},
        )
    ]


BENCHMARKS = [sun_verify, qr_verify, qr_tap, nfc_read]
