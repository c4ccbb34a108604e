"""Signed updates on the terminal: an offer in, a verified version beside the running one,
a switch between sales, then a confirmation or a rollback; the board's firmware likewise.

The server offers bundles on the terminal's own retained topic (:class:`UpdateOffer`, signed
by the server's key, handed over by ``terminal.sync``). For a **terminal** bundle the
:class:`Updater` thread:

1. downloads it over HTTP (kept in ``downloads/``), checks its size and SHA-256 against the
   offer, then its release signature against the key pinned in the configuration
   (``release_public_key``) and every file's hash (:func:`shared.release.open_bundle`);
2. refuses a version that is not newer than the running one or too old to replace it
   (:func:`shared.release.check_offer`), and one that already rolled back here;
3. unpacks it into ``versions/<v>`` beside the running version and checks the files on disk;
4. waits until the queue is quiet — no tap in hand, none for ``update_quiet_s``, watched for
   at least that long after the install — and then,
   holding the journal lock so that no sale starts, marks the version *pending* and points
   ``current`` at it (:meth:`~terminal.update_layout.Layout.begin_switch`), and asks the
   agent to exit with :data:`~terminal.update_layout.RESTART_EXIT_CODE`; the launcher
   (:mod:`terminal.launcher`) starts the new version.

The new version, finding itself pending, reports ``running`` to the server; the server's
ack — after it committed the report — confirms it (the pending mark goes). If no ack comes
within ``update_health_s`` the launcher rolls back, and the old version, started again,
reports ``rolled_back`` (``update_rolled_back``) and never installs that version again.
Every outcome is reported with a stable code (``update_bad_signature``, ``update_downgrade``,
``update_corrupted`` …), kept for ``canteen-terminal status`` and shown as an ``update``
event. Reports are sent again every :data:`REPORT_RETRY_S` until the server acknowledges them.

A **firmware** bundle is checked the same way against the firmware the board says it runs,
packed into an image (``hardware.board.fwimage``) and pushed over the board link between
sales (:meth:`hardware.board_link.BoardLink.flash_firmware`); the board checks the image's
SHA-256 before it installs it, restarts into it, and the terminal reports ``running`` once
the board says the new version.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from hardware.board import fwimage
from shared.clock import Clock
from shared.errors import DomainError
from shared.protocol import OfferedBundle, UpdateOffer, UpdateReport
from shared.release import Bundle, Manifest, check_offer, open_bundle, sha256_hex, verify_tree
from terminal.config import TerminalConfig
from terminal.server_http import ServerUnreachable
from terminal.store import Store
from terminal.update_layout import MANIFEST, SIGNATURE, Layout, write_atomic
from terminal.update_reports import ReportQueue

log = logging.getLogger(__name__)

REPORT_RETRY_S = 5.0
DOWNLOAD_RETRY_S = 30.0
# refusals of the bundle itself (anything else that goes wrong is a failure: retried by a restart)
REFUSALS = frozenset(
    {"update_bad_signature", "update_corrupted", "update_downgrade", "update_too_old", "update_malformed"}
)
Event = dict[str, Any]


class _Retry(Exception):
    """The server could not be reached: try the offer again later."""


class Updater:
    def __init__(
        self,
        config: TerminalConfig,
        *,
        running: str,
        layout: Layout | None,
        under_launcher: bool,
        download: Callable[[str, str], bytes],
        send_report: Callable[[UpdateReport], str | None],
        when_idle: Callable[[float, Callable[[], None]], bool],
        restart: Callable[[], None],
        clock: Clock,
        board: Any = None,
        on_event: Callable[[Event], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.running = running
        self.layout = layout
        self.under_launcher = under_launcher
        self._download = download
        self._when_idle = when_idle
        self._restart = restart
        self.clock = clock
        self.board = board
        self._emit = on_event or (lambda event: None)
        self._mono = monotonic
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._offer: UpdateOffer | None = None
        self.reports = ReportQueue(send_report, monotonic, REPORT_RETRY_S)
        self._settled: dict[tuple[str, str], str] = {}  # (kind, version) → what became of it here
        self._retry_at: dict[tuple[str, str], float] = {}
        self.ready: str | None = None  # a terminal version installed, waiting for a quiet queue
        self._ready_at = 0.0  # since when (monotonic): the queue is watched for quiet_s from then
        self._firmware_image: tuple[str, bytes] | None = None
        self.switched = False
        self._store: Store | None = None
        self._thread = threading.Thread(target=self._run, name="updater", daemon=True)

    # --- called from other threads -----------------------------------------------------------

    def start(self) -> Updater:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)

    def offer(self, offer: UpdateOffer) -> None:
        """The server's current offer for this terminal (sync thread)."""
        with self._lock:
            self._offer = offer
        self._wake.set()

    def acked(self, msg_id: str, reason: str | None) -> bool:
        """The server answered a message; True if it was one of our reports (sync thread)."""
        report = self.reports.answered(msg_id, refused=reason is not None)
        if report is None:
            return False
        if reason is not None:
            log.error("update report %s refused by the server: %s", report.state, reason)
        self._wake.set()
        return True

    # --- the updater thread ------------------------------------------------------------------

    def _run(self) -> None:
        self._store = Store(self.config.db_path)
        try:
            self._at_start()
            while not self._stop.is_set():
                try:
                    self._step()
                except Exception:  # noqa: BLE001 — the updater must never take the till down
                    log.exception("updater: unexpected error")
                    self._stop.wait(5.0)
                self._wake.wait(1.0)
                self._wake.clear()
        finally:
            self._store.close()

    def _at_start(self) -> None:
        self._record_meta("software_version", self.running)
        if self.layout is None:
            return
        pending = self.layout.pending()
        if pending is not None and pending["version"] == self.running:
            # a new version on trial: the server's ack of this report keeps it
            log.warning("running version %s on trial: reporting to the server", self.running)
            self._note("terminal", self.running, "running", None, "on trial until the server answers")
            self._report(
                UpdateReport("terminal", self.running, "running", self.running),
                lambda: self._confirm(self.running),
            )
        last = self.layout.last()
        if last is not None and last.get("state") == "rolled_back" and not last.get("reported"):
            version = str(last.get("version"))
            reason = str(last.get("reason") or "")[:500]
            self._note("terminal", version, "rolled_back", "update_rolled_back", reason)

            def reported(last: dict[str, Any] = last) -> None:
                assert self.layout is not None
                self.layout.set_last({**last, "reported": True})

            self._report(
                UpdateReport("terminal", version, "rolled_back", self.running, "update_rolled_back", reason),
                reported,
            )

    def _step(self) -> None:
        for action in self.reports.take_actions():
            action()
        self.reports.send_due()
        if self.switched:
            return
        with self._lock:
            offer = self._offer
        if offer is None:
            return
        wanted = offer.of_kind("terminal")
        if self.ready is not None and (wanted is None or wanted.version != self.ready):
            log.warning("the offer of %s was withdrawn or replaced before the switch", self.ready)
            self.ready = None
        if wanted is not None and self.ready is None:
            self._consider_terminal(wanted)
        if self.ready is not None:
            self._try_switch(self.ready)
        firmware = offer.of_kind("firmware")
        if firmware is not None:
            self._consider_firmware(firmware)

    # --- terminal software -------------------------------------------------------------------

    def _due(self, key: tuple[str, str]) -> bool:
        return key not in self._settled and self._mono() >= self._retry_at.get(key, 0.0)

    def _consider_terminal(self, o: OfferedBundle) -> None:
        key = ("terminal", o.version)
        if not self._due(key):
            return
        if o.version == self.running:
            self._settled[key] = "running"
            return
        if self.layout is not None and o.version in self.layout.blocked():
            self._refuse(o, DomainError("update_rolled_back", f"{o.version} rolled back here; never again"))
            return
        problem = self._not_configured()
        if problem:
            self._refuse(o, DomainError("update_not_configured", problem))
            return
        assert self.layout is not None
        try:
            bundle = self._fetch(o)
            check_offer(bundle.manifest, "terminal", self.running)
            self.layout.install(
                o.version,
                bundle.files,
                {MANIFEST: bundle.manifest_bytes, SIGNATURE: bundle.signature.encode()},
            )
            verify_tree(bundle.manifest, lambda p: self.layout.read_installed(o.version, p))  # type: ignore[union-attr]
        except _Retry as exc:
            self._retry_at[key] = self._mono() + DOWNLOAD_RETRY_S
            log.warning("update %s: download failed, trying again later: %s", o.version, exc)
            return
        except DomainError as exc:
            if exc.code == "update_corrupted" and self.layout.installed(o.version):
                self.layout.remove(o.version)  # changed on disk: unpacked again next time
            self._refuse(o, exc)
            return
        except OSError as exc:
            self._refuse(o, DomainError("update_install_failed", str(exc)))
            return
        self.ready, self._ready_at = o.version, self._mono()
        self._note("terminal", o.version, "installed", None, "waiting for a quiet moment between sales")
        self._report(UpdateReport("terminal", o.version, "installed", self.running))

    def _not_configured(self) -> str:
        if not self.config.release_public_key:
            return "no release_public_key in the configuration"
        if self.layout is None:
            return "no update_root in the configuration"
        if not self.under_launcher:
            return "not run by canteen-terminal-launcher (nothing would start the new version)"
        return ""

    def _fetch(self, o: OfferedBundle) -> Bundle:
        """The offered bundle, downloaded (or kept from before), checked against the offer
        and then against the release key."""
        path = self.layout.downloads / f"{o.kind}-{o.version}.bundle" if self.layout else None
        data: bytes | None = None
        if path is not None and path.is_file():
            data = path.read_bytes()
            if sha256_hex(data) != o.sha256:
                data = None
        if data is None:
            try:
                data = self._download(o.kind, o.version)
            except ServerUnreachable as exc:
                raise _Retry(str(exc)) from exc
            if len(data) != o.size or sha256_hex(data) != o.sha256:
                raise DomainError(
                    "update_corrupted", "the download does not match the offer's size and SHA-256"
                )
            if path is not None:
                write_atomic(path, data)
            self._emit({"event": "update", "kind": o.kind, "version": o.version, "state": "downloaded"})
        bundle = open_bundle(data, self.config.release_public_key)
        if bundle.manifest.version != o.version:
            raise DomainError(
                "update_malformed", f"offered {o.version}, the bundle says {bundle.manifest.version}"
            )
        return bundle

    def _try_switch(self, version: str) -> None:
        assert self.layout is not None
        layout = self.layout
        if self._mono() - self._ready_at < self.config.update_quiet_s:
            return  # the queue is watched a whole quiet period before it counts as quiet

        def switch() -> None:
            # checked once more on disk, then switched: no sale can start meanwhile
            manifest = _installed_manifest(layout, version)
            verify_tree(manifest, lambda p: layout.read_installed(version, p))
            layout.begin_switch(version, self.config.update_health_s, self.clock.now_ms())

        try:
            switched = self._when_idle(self.config.update_quiet_s, switch)
        except DomainError as exc:
            self.ready = None
            layout.remove(version)
            self._settled.pop(("terminal", version), None)
            self._note("terminal", version, "failed", exc.code, exc.detail)
            return
        if not switched:
            return
        self.switched, self.ready = True, None
        log.warning("switched to version %s between sales: restarting into it", version)
        self._note("terminal", version, "switched", None, "restarting into the new version")
        self._restart()

    def _confirm(self, version: str) -> None:
        """The server acknowledged that the new version runs."""
        if self.layout is None or not self.layout.confirm(version, self.clock.now_ms()):
            return
        log.warning("version %s confirmed by the server", version)
        self._note("terminal", version, "confirmed", None, "the server acknowledged the new version")
        for old in sorted(p.name for p in self.layout.versions.glob("*") if not p.name.startswith(".")):
            if old != version:
                self.layout.remove(old)
        for bundle in self.layout.downloads.glob("terminal-*.bundle"):
            if bundle.name != f"terminal-{version}.bundle":
                bundle.unlink(missing_ok=True)

    # --- board firmware ----------------------------------------------------------------------

    def _consider_firmware(self, o: OfferedBundle) -> None:
        key = ("firmware", o.version)
        if not self._due(key):
            return
        board = self.board
        if board is None or not hasattr(board, "flash_firmware"):
            self._refuse(o, DomainError("update_not_configured", "no peripheral board on this terminal"))
            return
        running = board.firmware_version or (board.ping() and board.firmware_version)
        if running is None:
            self._retry_at[key] = self._mono() + DOWNLOAD_RETRY_S
            log.warning("firmware %s: the board does not answer; trying again later", o.version)
            return
        if o.version == running:
            self._settled[key] = "running"
            return
        if not self.config.release_public_key:
            self._refuse(
                o, DomainError("update_not_configured", "no release_public_key in the configuration")
            )
            return
        if self._firmware_image is None or self._firmware_image[0] != o.version:
            try:
                bundle = self._fetch(o)
                check_offer(bundle.manifest, "firmware", running)
                image = fwimage.pack([(p.split("/", 1)[1], bundle.files[p]) for p in sorted(bundle.files)])
            except _Retry as exc:
                self._retry_at[key] = self._mono() + DOWNLOAD_RETRY_S
                log.warning("firmware %s: download failed, trying again later: %s", o.version, exc)
                return
            except DomainError as exc:
                self._refuse(o, exc)
                return
            except ValueError as exc:  # a file the board's image cannot carry (a sub-folder)
                self._refuse(o, DomainError("update_malformed", str(exc)))
                return
            self._firmware_image = (o.version, image)
            self._note(
                "firmware", o.version, "installed", None, "verified; pushing to the board between sales"
            )
            self._report(UpdateReport("firmware", o.version, "installed", running))
        image = self._firmware_image[1]
        result: list[bool] = []
        if not self._when_idle(
            self.config.update_quiet_s, lambda: result.append(board.flash_firmware(image, o.version))
        ):
            return
        self._firmware_image = None
        if not result[0]:
            self._refuse(
                o, DomainError("firmware_update_failed", f"the board did not come back as {o.version}")
            )
            return
        self._settled[key] = "running"
        log.warning("board firmware %s running (was %s)", o.version, running)
        self._note("firmware", o.version, "running", None, f"the board runs {o.version}")
        self._report(UpdateReport("firmware", o.version, "running", o.version))

    # --- reports, status and events ------------------------------------------------------------

    def _refuse(self, o: OfferedBundle, exc: DomainError) -> None:
        state = "refused" if exc.code in REFUSALS or exc.code == "update_rolled_back" else "failed"
        self._settled[(o.kind, o.version)] = state
        log.error("update %s %s %s: %s: %s", o.kind, o.version, state, exc.code, exc.detail)
        running = (
            self.running if o.kind == "terminal" else str(getattr(self.board, "firmware_version", "") or "")
        )
        self._note(o.kind, o.version, state, exc.code, exc.detail)
        self._report(UpdateReport(o.kind, o.version, state, running, exc.code, exc.detail[:500] or None))
        if state == "refused" and self.layout is not None:  # a refused bundle is not kept on disk
            (self.layout.downloads / f"{o.kind}-{o.version}.bundle").unlink(missing_ok=True)

    def _report(self, report: UpdateReport, on_ack: Callable[[], None] | None = None) -> None:
        if self.reports.add(report, on_ack):
            self._wake.set()

    def _note(self, kind: str, version: str, state: str, code: str | None, detail: str | None) -> None:
        """Keep the outcome for ``canteen-terminal status`` and tell whoever listens."""
        record = {"kind": kind, "version": version, "state": state, "code": code, "detail": detail}
        self._record_meta(
            f"update_{kind}", json.dumps({**record, "at_ms": self.clock.now_ms()}, ensure_ascii=False)
        )
        self._emit({"event": "update", **{k: v for k, v in record.items() if v is not None}})

    def _record_meta(self, key: str, value: str) -> None:
        store = self._store
        if store is None:
            return
        try:
            store.set_metas({key: value})
        except Exception as exc:  # noqa: BLE001 — a status note never stops an update
            log.warning("could not record %s: %s", key, exc)


def _installed_manifest(layout: Layout, version: str) -> Manifest:
    """The signed manifest kept with an installed version."""
    data = layout.read_installed(version, MANIFEST)
    if data is None:
        raise DomainError("update_corrupted", f"{version}: manifest.json missing on disk")
    return Manifest.from_bytes(data)
