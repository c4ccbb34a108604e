"""NFC cards through nfcpy — the one module that imports nfcpy.

:class:`NfcCardReader` is the real reader: ``ContactlessFrontend`` on a device string from
the terminal's configuration (``usb``, ``usb:072f:2200``, ``tty:AMA0:pn532``, or
``udp:localhost:54321`` for nfcpy's UDP test device). A reader thread senses for cards and
queues a :class:`~hardware.reader.Tap` per card presented: the UID (hex, upper case) and,
for an NTAG 424 DNA card, the SUN URL from its NDEF file (checked by the terminal, see
``terminal/card_check.py``). A card held on the reader is read again and again; the
:class:`Debouncer` turns that into one tap. A device that cannot be opened or fails is
reported (``on_error``, :attr:`NfcCardReader.last_error`) and reopened; nothing is raised
into the terminal.

:class:`EmulatedCard` is the other side of the UDP device: a card, emulated on its own
thread, that the real reader path reads — an NTAG 424 DNA-like Type 4A card producing a
fresh SUN URL on every read, or a plain UID-only card. Tests and the simulator use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nfc
import nfc.clf

from hardware.device_thread import ReopeningDevice
from hardware.ntag424 import SunKeys, make_url
from hardware.reader import Tap

log = logging.getLogger(__name__)

NDEF_AID = bytes.fromhex("D2760000850101")
CC_FILE, NDEF_FILE = b"\xe1\x03", b"\xe1\x04"


class Debouncer:
    """One tap per presentation: the same UID again within ``hold_s`` of the last sighting
    (a card left on the reader) is not a new tap."""

    def __init__(self, hold_s: float = 2.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.hold_s = hold_s
        self._mono = monotonic
        self._last: tuple[str, float] | None = None

    def fresh(self, uid: str) -> bool:
        now = self._mono()
        last = self._last
        self._last = (uid, now)
        return last is None or last[0] != uid or now - last[1] > self.hold_s


def sun_url_of(tag: Any) -> str | None:
    """The first URL with a query in a Type 4 tag's NDEF message (the SUN URL), if any."""
    if getattr(tag, "TYPE", "") != "Type4Tag":
        return None
    ndef = tag.ndef
    if ndef is None:
        return None
    for record in ndef.records:
        uri = getattr(record, "iri", None)  # .uri would percent-encode the query's = and &
        if isinstance(uri, str) and "?" in uri:
            return uri
    return None


class NfcCardReader(ReopeningDevice[Tap]):
    """The real card reader (nfcpy). Implements :class:`hardware.reader.CardReader`.
    ``ready`` is set while the device is open and sensing."""

    open_errors = (OSError, ValueError)  # no such device, busy, a bad device string
    read_errors = ()  # nfcpy swallows a device's errors while sensing: see read_device

    def __init__(
        self,
        device: str,
        *,
        targets: tuple[str, ...] = ("106A",),
        debounce: Debouncer | None = None,
        on_error: Callable[[str], None] | None = None,
        reopen_s: float = 2.0,
    ) -> None:
        super().__init__(f"NFC reader {device}", on_error=on_error, reopen_s=reopen_s)
        self.device = device
        self.targets = list(targets)  # explicit targets: the default list costs ~2 s a sense
        self._debounce = debounce or Debouncer()
        self.misreads = 0
        self.start()

    def open_device(self) -> Any:
        return nfc.ContactlessFrontend(self.device)

    def read_device(self, clf: Any) -> None:
        options = {
            "targets": self.targets,
            "on-connect": self._on_connect,
            "iterations": 1,
            "interval": 0.05,
            "beep-on-connect": False,
        }
        while not self.stopping():
            try:
                result = clf.connect(rdwr=options, terminate=self.stopping)
            except (nfc.clf.CommunicationError, nfc.tag.TagCommandError) as exc:
                self.misreads += 1
                log.info("NFC reader %s: card read interrupted: %s", self.device, exc)
                continue
            if result is False and not self.stopping():  # nfcpy swallowed a device error
                self.report("device error while sensing")
                self.pause()
                return

    def _on_connect(self, tag: Any) -> bool:
        uid = bytes(tag.identifier).hex().upper()
        url = sun_url_of(tag)
        if self._debounce.fresh(uid):
            self.put(Tap(uid, "card", url))
        return False  # do not wait for the card to leave: sense again at once


# --- the emulated card (nfcpy's UDP device) --------------------------------------------------


def _uri_record(url: str) -> bytes:
    """A one-record NDEF message holding a URI record (short record, no prefix code)."""
    payload = b"\x00" + url.encode()
    if len(payload) > 255:
        raise ValueError("URL too long for a short NDEF record")
    return bytes([0xD1, 0x01, len(payload)]) + b"U" + payload


@dataclass
class _Files:
    cc: bytes
    ndef: bytes


class EmulatedCard:
    """A card on nfcpy's UDP device, read by a reader on ``udp:<host>:<port>``.

    ``sun``: (keys, base URL) for an NTAG 424 DNA-like Type 4A card whose read counter rises
    with every read; without it, a UID-only card. :meth:`serve` answers readers until
    ``stop`` is set (the card lies on the reader).
    """

    def __init__(
        self, port: int, uid: bytes, *, sun: tuple[SunKeys, str] | None = None, counter: int = 0
    ) -> None:
        self.port = port
        self.uid = uid
        self.sun = sun
        self.counter = counter
        self.reads = 0
        self._clf: Any = None

    def serve(self, stop: threading.Event, listen_s: float = 0.5) -> None:
        self._clf = nfc.ContactlessFrontend(f"udp:localhost:{self.port}")
        try:
            while not stop.is_set():
                target = self._clf.listen(self._local_target(), listen_s)
                if target is not None and target.tt4_cmd:
                    self._type4_session(bytes(target.tt4_cmd), stop)
        finally:
            self._clf.close()

    def _local_target(self) -> Any:
        target = nfc.clf.LocalTarget("106A")
        target.sens_res = bytearray.fromhex("4403")
        target.sdd_res = bytearray(self.uid)
        target.sel_res = bytearray([0x20 if self.sun else 0x00])  # 0x20: ISO-DEP (Type 4A)
        return target

    def _files(self) -> _Files:
        assert self.sun is not None
        keys, base = self.sun
        self.counter += 1
        self.reads += 1
        message = _uri_record(make_url(base, keys, self.uid, self.counter))
        ndef = len(message).to_bytes(2, "big") + message
        cc = (
            bytes.fromhex("000F20007F007F") + b"\x04\x06" + NDEF_FILE + (256).to_bytes(2, "big") + b"\x00\xff"
        )
        return _Files(cc, ndef)

    def _type4_session(self, rats: bytes, stop: threading.Event) -> None:
        if rats[0] != 0xE0:
            return
        files = self._files()
        selected = b""
        response: bytes | None = bytes.fromhex("0578 80 A0 02")  # ATS: FSCI 8, FWI 10 (~0.3 s)
        while not stop.is_set():
            try:
                cmd = self._clf.exchange(response, 1.0)
            except nfc.clf.CommunicationError:  # the reader went away (RFOFF) or went quiet
                return
            if not cmd:
                return
            pcb = cmd[0]
            if pcb & 0xEE == 0x02:  # I-block: an APDU
                apdu = bytes(cmd[1:])
                reply, selected = self._apdu(apdu, selected, files)
                response = bytes([0x02 | (pcb & 1)]) + reply
            elif pcb & 0xF6 == 0xB2:  # R(NAK) presence check
                response = bytes([0xA2 | (pcb & 1)])
            elif pcb & 0xF7 == 0xC2:  # S(DESELECT)
                self._clf.exchange(bytes([pcb]), 0)
                return
            else:  # a new activation (the reader sensed again): this read is over
                return

    @staticmethod
    def _apdu(apdu: bytes, selected: bytes, files: _Files) -> tuple[bytes, bytes]:
        ok, not_found = b"\x90\x00", b"\x6a\x82"
        if apdu[:2] == b"\x00\xa4":  # SELECT
            lc = apdu[4] if len(apdu) > 4 else 0
            data = apdu[5 : 5 + lc]
            if apdu[2] == 0x04:
                return (ok, b"app") if data == NDEF_AID else (not_found, selected)
            if data in (CC_FILE, NDEF_FILE) and selected:
                return ok, data
            return not_found, selected
        if apdu[:2] == b"\x00\xb0":  # READ BINARY
            content = {CC_FILE: files.cc, NDEF_FILE: files.ndef}.get(selected)
            if content is None:
                return b"\x69\x86", selected
            offset = int.from_bytes(apdu[2:4], "big")
            le = apdu[4] if len(apdu) > 4 else 0
            return content[offset : offset + (le or 256)] + ok, selected
        return b"\x6d\x00", selected
