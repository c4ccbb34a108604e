"""The NFC reader through nfcpy's real code path: a card emulated on nfcpy's UDP device
(its own thread, its own port) is sensed, activated and read by ContactlessFrontend."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hardware.nfc import Debouncer, EmulatedCard, NfcCardReader
from hardware.ntag424 import SunKeys, verify_url
from shared.clock import FakeClock
from shared.protocol.messages import decode_changes
from terminal.authorize import TapRequest
from tests.ident_helpers import offline_terminal

MASTER = bytes(range(32))
KEYS = SunKeys.from_master(MASTER)
SUN_UID = bytes.fromhex("04A1B2C3D4E5F6")
PLAIN_UID = bytes.fromhex("1D2E3F40516273")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def card_on_reader(card: EmulatedCard) -> Iterator[EmulatedCard]:
    stop = threading.Event()
    thread = threading.Thread(target=card.serve, args=(stop,), daemon=True)
    thread.start()
    time.sleep(0.1)  # let the card bind its port before the reader senses
    try:
        yield card
    finally:
        stop.set()
        thread.join(5)


@contextmanager
def reader(port: int, **kw: object) -> Iterator[NfcCardReader]:
    r = NfcCardReader(f"udp:localhost:{port}", **kw)  # type: ignore[arg-type]
    try:
        yield r
    finally:
        r.close()


def test_an_ntag424_card_is_read_with_its_sun_url() -> None:
    port = free_udp_port()
    with (
        card_on_reader(EmulatedCard(port, SUN_UID, sun=(KEYS, "https://canteen.example/c"), counter=41)),
        reader(port) as r,
    ):
        tap = r.read(10)
    assert tap is not None and tap.card_id == "04A1B2C3D4E5F6"
    msg = verify_url(KEYS, tap.credential)
    assert (msg.uid_hex, msg.counter) == ("04A1B2C3D4E5F6", 42)


def test_a_uid_only_card_is_read_without_a_credential() -> None:
    port = free_udp_port()
    with card_on_reader(EmulatedCard(port, PLAIN_UID)), reader(port) as r:
        tap = r.read(10)
    assert (tap.card_id, tap.credential) == ("1D2E3F40516273", None)


def test_a_card_left_on_the_reader_is_one_tap_until_it_is_presented_again() -> None:
    port = free_udp_port()
    now = [100.0]
    debounce = Debouncer(hold_s=2.0, monotonic=lambda: now[0])
    card = EmulatedCard(port, SUN_UID, sun=(KEYS, "https://canteen.example/c"))
    with card_on_reader(card), reader(port, debounce=debounce) as r:
        assert r.read(30) is not None
        # the emulated card is read about once a second while it lies there; one read after the
        # first is what matters (a loaded CI machine once gave only one read in 10 s)
        deadline = time.monotonic() + 30
        while card.reads < 2 and time.monotonic() < deadline:  # read again…
            time.sleep(0.05)
        assert card.reads >= 2, f"not read again: misreads={r.misreads} error={r.last_error}"
        assert r.read(0.1) is None  # …but no new tap
        now[0] += 5.0  # the card was taken away and brought back
        tap = r.read(10)
    assert tap is not None and verify_url(KEYS, tap.credential).counter > 1


def test_the_real_read_path_pays_and_a_cloned_uid_is_refused(tmp_path, clock: FakeClock) -> None:  # noqa: ANN001
    t = offline_terminal(tmp_path, clock, sun_master_key_hex=MASTER.hex())
    t.store.apply_changes(
        2,
        decode_changes(
            ({"kind": "card", "card_id": "04A1B2C3D4E5F6", "holder_id": "H1", "status": "active"},)
        ),
    )
    port = free_udp_port()
    with (
        card_on_reader(EmulatedCard(port, SUN_UID, sun=(KEYS, "https://canteen.example/c"))),
        reader(port) as r,
    ):
        tap = r.read(10)
    decision, sale = t.tap(TapRequest(tap.card_id, method=tap.method, credential=tap.credential))
    assert decision.approved and sale.credential == "sun:04A1B2C3D4E5F6:1"

    port = free_udp_port()  # a magic card with the same UID but no keys
    with card_on_reader(EmulatedCard(port, SUN_UID)), reader(port) as r:
        clone = r.read(10)
    assert clone.credential is None
    decision, sale = t.tap(TapRequest(clone.card_id, method=clone.method, credential=clone.credential))
    assert (decision.reason, sale) == ("card_replayed", None)
    t.store.close()


@pytest.mark.parametrize("device", ["tty:NOPE:pn532", "bogus-device"])
def test_a_missing_reader_is_reported_not_raised(device: str) -> None:
    errors: list[str] = []
    seen = threading.Event()
    r = NfcCardReader(device, on_error=lambda m: (errors.append(m), seen.set()), reopen_s=0.05)
    try:
        assert seen.wait(30)
        assert r.read(0.05) is None
        assert "cannot open" in r.last_error
    finally:
        r.close()


def test_debouncer_lets_another_card_through_at_once() -> None:
    now = [0.0]
    d = Debouncer(2.0, monotonic=lambda: now[0])
    assert d.fresh("A") and not d.fresh("A") and d.fresh("B") and d.fresh("A")
    now[0] = 1.9
    assert not d.fresh("A")
    now[0] = 4.0
    assert d.fresh("A")
