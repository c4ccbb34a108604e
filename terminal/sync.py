"""The terminal's sync agent: outbox up, acks and deltas down, heartbeats, snapshots.

One thread owns all sync work; the MQTT link's callbacks only put messages on its queue.

* **Upstream.** Outbox rows go up in signed batches (``batch_size`` sales, up to ``window``
  batches in flight). A row leaves the outbox only when the server's signed ack for it
  arrives — after the server committed. A batch not acknowledged within ``ack_timeout_s``,
  or in flight when the link dropped, is simply sent again: the server answers copies
  with ``duplicate`` and the first result.
* **Reversals** (冲正, :mod:`terminal.reversals`) go up the same way from their own outbox, in
  ``reversal_batch`` messages on their own topic, answered by ``reversal_ack``; one the server
  keeps for a sale it has not received yet (``pending``) stays in the outbox until a final
  answer — the server sends it unasked when the sale arrives, or answers a resend after a
  reconnect.
* **Downstream.** Deltas must arrive as ``version + 1``; an old one is ignored; a gap, or a
  fresh terminal, triggers catch-up over HTTP (deltas since our version, or a snapshot).
  The newest delta is retained by the broker, so every (re)connect reveals a gap at once.
* **Status.** A retained heartbeat every ``heartbeat_s`` with the watermark ("no unsent
  sale before T"), pending count and clock offset; the last will, set before each connect,
  says "offline". The link state is also kept in the local database (``link_state``,
  ``offline_since_ms``, ``last_sync_ms``) for ``canteen-terminal status``, and every change
  of :attr:`SyncAgent.in_sync` is reported to the terminal, which shows it on the display.
* **Clock.** The offset server − terminal is measured over HTTP (``/api/v1/health``, NTP
  style) on every connect and every ``clock_probe_s``, and from every ack's send time. It
  is stored with the boot id: after a reboot the old value says nothing about the new
  clock and is dropped until measured again.
* **In sync** (:attr:`SyncAgent.in_sync`, what lets the terminal use its online limits)
  needs more than a TCP connection to the broker: the cache caught up with the deltas,
  the **server present** — its signed ``online`` presence (``server.presence``) heard
  within ``server_silence_s`` and no ``offline`` will since — and **no batch waiting**
  longer than ``ack_timeout_s`` for its ack (a half-open link: our bytes leave, nothing
  comes back). Otherwise the offline limits apply, the display says so, and
  ``offline_since_ms`` (for ``max_offline_age_ms``) counts from the moment sync was lost,
  across reconnects that never got back in sync.
* **Presence freshness.** An ``online`` presence counts only when it is recent — its signed
  send time, by this terminal's clock corrected by the measured offset, within
  ``server_silence_s`` — and its sequence is not below the last one seen from the same
  server boot; it counts from its send time, not from its arrival, so a captured ``online``
  replayed later (by anyone who can publish on the broker) keeps no terminal online.
* **One identity, one process.** Each process has a random ``instance`` id in its status
  and last will, and reads its own (retained) status topic back. Once it has seen its own
  status there, a status from another instance means a second process runs this terminal's
  configuration (each connect takes the other's session over: both flap). The terminal
  then logs ``terminal_identity_duplicate``, keeps it in ``identity_conflict`` (shown by
  ``canteen-terminal status``) and tells the display (:attr:`SyncAgent.identity_conflict`).
* **Updates.** The server's signed offer (retained on the terminal's own ``down/update``)
  goes to :attr:`SyncAgent.on_update_offer`; :meth:`SyncAgent.send_update_report` sends a
  report up, and the server's ack of one goes to :attr:`SyncAgent.on_report_ack`
  (``terminal.updater`` does the rest).
* **Key rotation.** The server offers a new key sealed under the current one on this
  terminal's retained ``down/rekey`` topic (and over HTTP, asked after every connect). The
  agent opens it, stores it durably (:class:`terminal.credentials.Keyring`), signs
  everything from then on with it — the outbox's unsent sales too, as they are signed when
  sent — and reports its status at once, which tells the server the switch happened. Acks
  are verified with the new key or the one before.
* **Health.** The status also carries the oldest unsent sale's time, the last sync, the
  free disk and the journal's size, and the last error (a stable code and when), for the
  server's fleet view and alerts.
* **Cache age.** While in sync, the cache is current by definition (the broker would have
  delivered any delta); ``last_sync_ms`` records the last moment it was known current (an
  ack, a delta, the server's heartbeat while in sync, the link dropping while in sync), and
  the deny-list age limit counts from it.
"""

from __future__ import annotations

import collections
import json
import logging
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from shared.clock import Clock
from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import (
    DELTA_PAGE_SIZE,
    Ack,
    Delta,
    Envelope,
    ProtocolError,
    ReversalAck,
    ServerStatus,
    ServerVerifier,
    Status,
    UpdateOffer,
    UpdateReport,
    open_envelope,
    seal_hmac,
    topics,
)
from shared.protocol.backup_mark import BackupMark
from shared.protocol.delta_open import open_delta
from shared.protocol.envelope import sale_batch_body_json, seal_hmac_body_json
from shared.protocol.rekey import Rekey, key_id, open_key
from shared.sqlite_txn import write_txn
from terminal import journal_keep, reversals
from terminal.config import TerminalConfig
from terminal.credentials import Keyring
from terminal.health import disk_and_journal
from terminal.server_http import Send, ServerHttp, ServerUnreachable
from terminal.store import Store

log = logging.getLogger(__name__)

# an ack sets the clock only when it answers a message sent at most this long ago: the
# offset is then off by at most half of it (the HTTP probe's answer is judged the same way)
MAX_ACK_CLOCK_RTT_MS = 2_000


@dataclass
class SyncStats:
    batches_sent: int = 0
    sales_sent: int = 0
    acked: int = 0
    rejected: int = 0
    quarantined: int = 0  # held by the server for an admin's review: not applied, not resent
    resends: int = 0
    deltas_applied: int = 0
    snapshots: int = 0
    catchups: int = 0
    refused_messages: int = 0
    skipped_changes: int = 0  # downstream changes that would not decode (see _report_faults)
    unread_balances: int = 0  # ack balances that would not decode (the result still counts)
    reversals_sent: int = 0
    reversals_acked: int = 0
    reversals_rejected: int = 0
    reversals_waiting: int = 0  # answered pending: the server waits for their sale
    reject_reasons: dict[str, int] = field(default_factory=dict)


class Link(Protocol):
    """What the agent needs of its MQTT link (:class:`shared.mqtt.MqttLink`)."""

    @property
    def connected(self) -> bool: ...

    def start(self) -> object: ...

    def stop(self) -> None: ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool: ...


class LinkFactory(Protocol):
    def __call__(
        self,
        client_id: str,
        subscriptions: list[tuple[str, int]],
        *,
        on_message: Callable[[str, bytes], None],
        on_state: Callable[[bool], None],
        will: Callable[[], tuple[str, bytes, bool]],
    ) -> Link: ...


@dataclass(frozen=True)
class Transport:
    """The agent's outside world, each None for the real one: the MQTT link (made from the
    agent's subscriptions and callbacks), the HTTP exchange (:data:`terminal.server_http.Send`),
    the monotonic clock in seconds, and the machine's boot id. The deterministic simulator
    (``simulator.vopr``) hands in its network, its clock and a boot id per simulated power cycle."""

    link: LinkFactory | None = None
    http_send: Send | None = None
    monotonic: Callable[[], float] | None = None
    boot_id: str | None = None


@dataclass(frozen=True)
class _OwnTopics:
    """This terminal's own topics, formatted (and their terminal id checked) once: every
    message the agent receives is told apart by them, every batch and status sent on one."""

    ack: str
    status: str
    update_offer: str
    backup: str
    rekey: str
    sales: str
    reversals: str
    update_report: str

    @classmethod
    def of(cls, terminal_id: str) -> _OwnTopics:
        return cls(
            ack=topics.ack(terminal_id),
            status=topics.status(terminal_id),
            update_offer=topics.update_offer(terminal_id),
            backup=topics.backup(terminal_id),
            rekey=topics.rekey(terminal_id),
            sales=topics.sales(terminal_id),
            reversals=topics.reversals(terminal_id),
            update_report=topics.update_report(terminal_id),
        )


@dataclass
class _InFlight:
    seqs: list[int]
    sent_at: float
    kind: str = "sales"  # or "reversals"


class SyncAgent:
    def __init__(
        self,
        config: TerminalConfig,
        clock: Clock,
        *,
        journal_lock: threading.Lock | None = None,
        monotonic: Callable[[], float] | None = None,
        mqtt_url: str | None = None,
        http_url: str | None = None,
        on_link_change: Callable[[bool], None] | None = None,
        sale_clock: Callable[[], int] | None = None,
        on_identity_conflict: Callable[[str], None] | None = None,
        config_path: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        import time

        self.config = config
        self.clock = clock
        self._journal_lock = journal_lock or threading.Lock()
        transport = transport or Transport()
        self._mono = transport.monotonic or monotonic or time.monotonic
        self.store = Store(config.db_path)
        self.keys = Keyring(config, self.store, config_path)
        self._verifier = ServerVerifier(config.server_public_key)
        self.http = ServerHttp(
            http_url or config.server_url,
            config.terminal_id,
            self.keys.current,
            self._verifier,
            ca_file=config.ca_file,
            secret_of=lambda: self.keys.current,
            send=transport.http_send,
        )
        self._need_rekey_check = False
        self.rotations = 0  # keys installed by this process
        # the last error, for the status: (stable code, when) — kept across restarts
        saved_error = json.loads(self.store.get_meta("last_error") or "null")
        self.last_error: tuple[str, int] | None = (saved_error[0], saved_error[1]) if saved_error else None
        self._broker_refusals = 0
        self._error_saved_ms = 0
        # the network thread appends, the sync thread pops (both atomic on a deque): a
        # queue.Queue's lock and condition cost more than the messages' own handling here
        self._inbox: collections.deque[tuple[str, object]] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[str, _InFlight] = {}
        self._cursor = 0  # highest seq sent in this round
        self._rcursor = 0  # the same for reversals
        self._last_heartbeat = 0.0
        # the cache's delta version: this agent alone applies deltas (Store.apply_changes),
        # so it knows the stored value once its transaction committed — not read back at
        # every delta and every status
        self._delta_version = self.store.delta_version
        self._need_catchup = self._delta_version == 0
        self._version_seen = self._delta_version  # read by the will (network thread)
        self._on_link_change = on_link_change or (lambda online: None)
        self._sale_clock = sale_clock or clock.now_ms  # the clock sales are dated by
        self._reported_in_sync: bool | None = None
        self._next_probe = 0.0
        self._next_catchup = 0.0
        self._server_heard: float | None = None  # monotonic time of the last "online" presence
        # the newest presence accepted: (boot, seq, sent_at_ms), to refuse replays of older ones
        self._presence_last: tuple[str, int, int] | None = None
        self.instance = secrets.token_hex(8)  # this process (see "One identity, one process")
        self._own_status_seen = False
        self.identity_conflict: str | None = None  # the other instance's id, once seen
        self._on_identity_conflict = on_identity_conflict or (lambda other: None)
        # signed updates (terminal.updater sets these): an offer came; an ack answers a report
        self.on_update_offer: Callable[[UpdateOffer], None] | None = None
        self.on_report_ack: Callable[[str, str | None], bool] | None = None
        self._awaiting_since: float | None = None  # oldest unanswered batch since the last ack
        self.stats = SyncStats()
        self.online = False
        # offline since the last time this terminal knew it was offline, or since now
        self.offline_since_ms: int | None = (
            _int_or_none(self.store.get_meta("offline_since_ms")) or clock.now_ms()
        )
        self.last_sync_ms: int | None = _int_or_none(self.store.get_meta("last_sync_ms"))
        self._last_sync_stored = self.last_sync_ms  # what the database holds
        self.sync_fault: str | None = self.store.get_meta("sync_fault")
        self.boot_id = transport.boot_id or _boot_id()
        same_boot = self.store.get_meta("clock_boot_id") == self.boot_id
        self.clock_offset_ms: int | None = (
            _int_or_none(self.store.get_meta("clock_offset_ms")) if same_boot else None
        )
        self.store.set_metas(
            {
                "link_state": "offline",
                "offline_since_ms": str(self.offline_since_ms),
                "identity_conflict": None,
            }
        )
        self._topics = own = _OwnTopics.of(config.terminal_id)
        subscriptions = [
            (own.ack, 1),
            (topics.DELTA, 1),
            (topics.SERVER, 1),
            (own.status, 1),
            (own.update_offer, 1),
            (own.backup, 1),
            (own.rekey, 1),
        ]

        def on_message(topic: str, payload: bytes) -> None:
            self._inbox.append(("msg", (topic, payload)))
            self._wake.set()

        def on_state(up: bool) -> None:
            self._inbox.append(("link", up))
            self._wake.set()

        if transport.link is not None:
            self.link: Link = transport.link(
                config.terminal_id, subscriptions, on_message=on_message, on_state=on_state, will=self._will
            )
        else:
            # a clustered broker: every node, comma-separated; the link moves on when one dies
            address, *alternates = BrokerAddress.parse_list(mqtt_url or config.broker_url)
            credentials = None
            if address.username is None:  # the broker's user is the terminal: id and derived password
                address = replace(address, username=config.terminal_id, password=self.keys.broker_password(0))
                credentials = lambda refusals: (config.terminal_id, self.keys.broker_password(refusals))  # noqa: E731
            self.link = MqttLink(
                # the broker binds the client id to the user name (use_username_as_clientid): a
                # terminal's client id is its id, and nobody else's credentials can take it over
                config.terminal_id,
                address,
                subscriptions=subscriptions,
                on_message=on_message,
                on_state=on_state,
                will=self._will,
                credentials=credentials,
                ca_file=config.ca_file,
                alternates=alternates,
            )
        self._thread = threading.Thread(target=self._run, name=f"sync-{config.terminal_id}", daemon=True)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> SyncAgent:
        self._thread.start()
        self.link.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)
        if self.link.connected:  # a clean shutdown says so; the will covers the unclean one
            topic, payload, retain = self._will()
            self.link.publish(topic, payload, retain=retain)
        self.link.stop()
        self.store.close()

    @property
    def alive(self) -> bool:
        """The sync thread runs (the watchdog is pinged only then)."""
        return self._thread.is_alive()

    def poke(self) -> None:
        """A sale was journaled: send soon (the event's lock only when not set already)."""
        if not self._wake.is_set():
            self._wake.set()

    @property
    def in_sync(self) -> bool:
        """The link is up, the server present and answering, and the cache caught up with
        its deltas: the terminal may use its online limits (see the module doc)."""
        return self.online and not self._need_catchup and self.server_present and not self.ack_overdue

    def assume(self, in_sync: bool) -> None:
        """For a terminal run with no network (tests, benchmarks): take the link as up, the
        server present and the cache current — or the link as down."""
        self.online, self._need_catchup = in_sync, not in_sync
        self._server_heard = self._mono() + 1e9 if in_sync else None  # present until told otherwise
        self._awaiting_since = None

    @property
    def server_present(self) -> bool:
        """The server's "online" presence was heard within ``server_silence_s``."""
        heard = self._server_heard
        return heard is not None and self._mono() - heard <= self.config.server_silence_s

    @property
    def ack_overdue(self) -> bool:
        """A batch has waited longer than ``ack_timeout_s`` with no ack from the server."""
        waiting = self._awaiting_since
        return waiting is not None and self._mono() - waiting > self.config.ack_timeout_s

    # --- the sync thread ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            try:
                self.step()
            except Exception:  # noqa: BLE001 — the sync loop must survive anything; the outbox is safe on disk
                log.exception("%s: sync loop error", self.config.terminal_id)
                self._stop.wait(0.5)

    def step(self) -> None:
        """One round of the sync thread's work: what has come in, then the clock probe,
        catch-up, resends, the outbox and the heartbeat when due, then the link state. The
        thread runs it whenever woken; the deterministic simulator calls it directly."""
        self._drain_inbox()
        if self.online:
            if self._mono() >= self._next_probe:
                self._probe_clock()
            if self._need_catchup and self._mono() >= self._next_catchup:
                self._catch_up()
            if self._need_rekey_check and not self._need_catchup:
                self._ask_rekey()
            self._expire_inflight()
            self._send_outbox()
            if not self._inflight:
                # nothing sent waits for an answer (a late ack settled what had timed out, and
                # its resend was lost): not overdue, or the terminal would stay on its offline
                # limits until its next sale is acknowledged (found by canteen-sim vopr)
                self._awaiting_since = None
            if self._mono() - self._last_heartbeat >= self.config.heartbeat_s:
                self.send_status()
        self._report_link()
        refusals = getattr(self.link, "refusals", 0)  # the simulator's link has none
        if refusals > self._broker_refusals:
            self._broker_refusals = refusals
            self._note_error("broker_refused")

    def _drain_inbox(self) -> None:
        inbox = self._inbox
        while inbox:  # the sync thread is the only one taking from it
            kind, value = inbox.popleft()
            if kind == "link":
                self._on_link(bool(value))
            else:
                topic, payload = value  # type: ignore[misc]
                self._on_message(topic, payload)

    def _on_link(self, up: bool) -> None:
        if up:
            self.online = True
            self._server_heard = None  # only a presence heard on this connection counts
            self._awaiting_since = None
            # anything in flight on the old connection may be lost: send it all again
            if self._inflight:
                self.stats.resends += 1
            self._inflight.clear()
            self._cursor = self._rcursor = 0
            self._last_heartbeat = 0.0
            self._next_probe = 0.0
            # deltas published while we were away are not all retained: ask the server
            # what we missed before trusting the cache again
            self._need_catchup = True
            self._next_catchup = 0.0
            self._need_rekey_check = True  # a key offered while we were away
            log.info("%s: online", self.config.terminal_id)
        else:
            if self.in_sync:
                self._mark_synced()  # the cache was current until this moment
            self.online = False
            self._awaiting_since = None
            log.warning("%s: OFFLINE — serving from cache within the offline limits", self.config.terminal_id)

    def _report_link(self) -> None:
        now_in_sync = self.in_sync
        if now_in_sync != self._reported_in_sync:
            was_in_sync, self._reported_in_sync = self._reported_in_sync, now_in_sync
            if now_in_sync:
                self.offline_since_ms = None
                self.store.set_metas({"link_state": "online", "offline_since_ms": None})
            else:
                # the earliest moment sync was lost: reconnects that never got back in
                # sync do not restart the offline age
                self.offline_since_ms = self.offline_since_ms or self.clock.now_ms()
                self.store.set_metas(
                    {"link_state": "offline", "offline_since_ms": str(self.offline_since_ms)}
                )
                if self.online and was_in_sync:
                    why = (
                        "the server is silent"
                        if not self.server_present
                        else ("acks overdue" if self.ack_overdue else "catching up")
                    )
                    log.warning("%s: OFFLINE limits while connected: %s", self.config.terminal_id, why)
            self._on_link_change(now_in_sync)

    def _on_message(self, topic: str, payload: bytes) -> None:
        own = self._topics
        try:
            if topic == topics.DELTA:
                self._on_delta(*open_delta(payload, self._verifier))
            elif topic == topics.SERVER:
                env = open_envelope(payload, server=self._verifier, expect_type="server_status")
                self._on_presence(ServerStatus.from_body(env.body), env.sent_at_ms)
            elif topic == own.backup:
                env = open_envelope(payload, server=self._verifier, expect_type="backup_mark")
                self._on_backup_mark(BackupMark.from_body(env.body))
            elif topic == own.status:
                env = self._open_hmac(payload, self.config.terminal_id, "status")
                self._on_own_status(Status.from_body(env.body))
            elif topic == own.update_offer:
                env = open_envelope(payload, server=self._verifier, expect_type="update_offer")
                offer = UpdateOffer.from_body(env.body)
                if offer.terminal_id != self.config.terminal_id:
                    raise ProtocolError("terminal_mismatch", f"an offer for {offer.terminal_id}")
                if self.on_update_offer is not None:
                    self.on_update_offer(offer)
            elif topic == own.rekey:
                if payload:  # empty: the server withdrew its offer (the rotation is complete)
                    env = open_envelope(payload, server=self._verifier, expect_type="rekey")
                    self._on_rekey(Rekey.from_body(env.body))
            elif topic == own.ack:
                env = self._open_hmac(payload, "server", None)
                if env.type not in ("ack", "reversal_ack"):
                    raise ProtocolError("bad_field", f"type: expected an ack, got {env.type}")
                faults: list[ProtocolError] = []
                if env.type == "reversal_ack":
                    rack = ReversalAck.from_body(env.body, faults)
                    self._measure_clock(env.sent_at_ms, rack.in_reply_to)
                    self._on_reversal_ack(rack)
                    return
                ack = Ack.from_body(env.body, faults)
                self._measure_clock(env.sent_at_ms, ack.in_reply_to)
                if faults:  # the results still count; the balances come again with the deltas
                    self.stats.unread_balances += len(faults)
                    log.error(
                        "%s: ack %s: %d balance(s) unreadable, ignored: %s",
                        self.config.terminal_id,
                        ack.in_reply_to,
                        len(faults),
                        faults[0],
                    )
                self._on_ack(ack)
        except ProtocolError as exc:
            self.stats.refused_messages += 1
            log.warning("%s: refused %s: %s", self.config.terminal_id, topic, exc)

    def _open_hmac(self, payload: bytes, sender: str, expect_type: str | None) -> Envelope:
        """Open a message signed with this terminal's key, current or previous (an ack the
        server signed before it saw this terminal switch keys)."""
        keys = self.keys.all()
        for i, secret in enumerate(keys):
            try:
                return open_envelope(
                    payload,
                    secret_for=lambda s, k=secret: k if s == sender else None,
                    expect_type=expect_type,
                )
            except ProtocolError as exc:
                if exc.code != "bad_signature" or i == len(keys) - 1:
                    raise
        raise AssertionError("unreachable: the loop returns or raises")

    def _on_rekey(self, rekey: Rekey) -> None:
        """A new key offered by the server: install it durably, use it from now on, and say
        so at once (the status signed with it completes the rotation at the server)."""
        if rekey.key_id == self.keys.key_id:
            return  # installed already (a retained offer seen again)
        try:
            new = open_key(self.keys.current, self.config.terminal_id, rekey)
        except ProtocolError as exc:
            if rekey.for_key_id != key_id(self.keys.previous or b""):
                self._note_error(exc.code)
                log.warning("%s: key offer refused: %s", self.config.terminal_id, exc)
            return
        self.keys.install(new)
        self.rotations += 1
        log.warning("%s: key rotated: now %s", self.config.terminal_id, rekey.key_id)
        self._last_heartbeat = 0.0  # the next status, signed with the new key, goes at once
        if self.online:
            self.send_status()

    def _ask_rekey(self) -> None:
        self._need_rekey_check = False
        try:
            offer = self.http.rekey(self.clock.now_ms() + (self.clock_offset_ms or 0))
        except ServerUnreachable as exc:
            log.info(
                "%s: rekey check failed (the broker's offer still comes): %s", self.config.terminal_id, exc
            )
            return
        except ProtocolError as exc:
            log.warning("%s: rekey check refused: %s", self.config.terminal_id, exc)
            return
        if offer is not None:
            self._on_rekey(offer)

    def _note_error(self, code: str) -> None:
        """Remember the last error for the status; kept on disk for the next start when it
        is a new one, or a minute after the last write (an SD card is not written each
        second while the server stays unreachable)."""
        before, now = self.last_error, self.clock.now_ms()
        self.last_error = (code, now)
        if before is None or before[0] != code or now - self._error_saved_ms >= 60_000:
            self._error_saved_ms = now
            self.store.set_metas({"last_error": json.dumps(list(self.last_error))})

    def _report_faults(self, where: str, faults: list[ProtocolError]) -> None:
        """Downstream changes this terminal could not read were skipped: it keeps selling on
        its last good state for those records, logs them, and reports the code in its
        status (``sync_fault``) until a snapshot reads cleanly."""
        if not faults:
            return
        self.stats.skipped_changes += len(faults)
        self.sync_fault = faults[0].code
        self.store.set_metas({"sync_fault": self.sync_fault})
        self._note_error(self.sync_fault)
        log.error(
            "%s: %s: %d change(s) unreadable, skipped (selling on the last good state): %s",
            self.config.terminal_id,
            where,
            len(faults),
            "; ".join(str(f) for f in faults[:3]),
        )
        self._last_heartbeat = 0.0  # report it in the next status

    def _on_presence(self, presence: ServerStatus, sent_at_ms: int) -> None:
        if presence.state == "online":
            age_ms = self.clock.now_ms() + (self.clock_offset_ms or 0) - sent_at_ms
            last = self._presence_last
            if age_ms > self.config.server_silence_s * 1000:
                log.warning(
                    "%s: ignored a server presence %d s old (replayed or delayed)",
                    self.config.terminal_id,
                    age_ms // 1000,
                )
                return
            if last is not None and (
                (presence.boot == last[0] and presence.seq < last[1])
                or (presence.boot != last[0] and sent_at_ms < last[2])
            ):
                log.warning(
                    "%s: ignored a server presence older than one already seen (replayed)",
                    self.config.terminal_id,
                )
                return
            if self.in_sync:
                self._mark_synced()  # the server was there, and we held its latest delta
            self._presence_last = (presence.boot, presence.seq, sent_at_ms)
            # present from the moment it was sent, not from its arrival: a copy of the same
            # message arriving later extends nothing
            heard = self._mono() - max(age_ms, 0) / 1000
            self._server_heard = max(heard, self._server_heard or heard)
        else:
            if self.in_sync:
                self._mark_synced()
            self._server_heard = None
            log.warning("%s: the server went offline", self.config.terminal_id)

    def _on_backup_mark(self, mark: BackupMark) -> None:
        """The server's backup mark: prune the journal up to it; after a restore, send again
        what the server lost (``terminal.journal_keep``)."""
        if mark.terminal_id != self.config.terminal_id:
            raise ProtocolError("terminal_mismatch", f"backup mark for {mark.terminal_id}")
        keep_ms = int(self.config.journal_keep_days * 86_400_000)
        # not under the journal lock: each step is its own short transaction, taps go on
        outcome = journal_keep.on_mark(self.store, mark, self.clock.now_ms(), keep_ms)
        if outcome.requeued:
            self._cursor = self._rcursor = 0  # requeued below what this round already sent
            self._wake.set()

    def _on_own_status(self, status: Status) -> None:
        """Our own status topic, read back: another instance there means a second process
        with this terminal's configuration (once we have seen our own status; before that, a
        retained status is the previous run's)."""
        if status.instance == self.instance:
            self._own_status_seen = True
            return
        if not status.instance or not self._own_status_seen or self.identity_conflict == status.instance:
            return
        self.identity_conflict = status.instance
        log.warning(
            "%s: terminal_identity_duplicate: another process (instance %s) runs this terminal's "
            "configuration; this one is %s",
            self.config.terminal_id,
            status.instance,
            self.instance,
        )
        self.store.set_metas(
            {"identity_conflict": json.dumps({"mine": self.instance, "other": status.instance})}
        )
        self._on_identity_conflict(status.instance)

    def _measure_clock(self, server_ms: int, in_reply_to: str) -> None:
        """The offset from an ack's send time, NTP style: only an ack answering a message
        still in flight whose round trip was short (:data:`MAX_ACK_CLOCK_RTT_MS`) says what
        time it is now — the server sent it between our send and now, so the midpoint is
        off by at most half the round trip. An ack that spent hours in a broker queue (a copy
        delivered late, an answer to a message already resent) would set the clock back by
        hours and misdate the next sales (found by the deterministic simulator, seed 39)."""
        flight = self._inflight.get(in_reply_to)
        if flight is None:
            return
        rtt_ms = int((self._mono() - flight.sent_at) * 1000)
        if not 0 <= rtt_ms <= MAX_ACK_CLOCK_RTT_MS:
            return
        self._set_offset(server_ms - (self.clock.now_ms() - rtt_ms // 2))

    def _set_offset(self, offset: int) -> None:
        old = self.clock_offset_ms
        self.clock_offset_ms = offset
        if old is None or abs(old - offset) >= 1000:
            self.store.set_metas({"clock_offset_ms": str(offset), "clock_boot_id": self.boot_id})
            if old is None or abs(offset) > 60_000:
                log.info("%s: clock offset to the server %+d ms", self.config.terminal_id, offset)

    def _probe_clock(self) -> None:
        self._next_probe = self._mono() + self.config.clock_probe_s
        try:
            offset, rtt = self.http.clock_offset(self.clock.now_ms)
        except ServerUnreachable as exc:
            log.warning("%s: clock probe failed: %s", self.config.terminal_id, exc)
            self._next_probe = self._mono() + min(self.config.clock_probe_s, 5.0)
            return
        self._set_offset(offset)

    def _on_ack(self, ack: Ack) -> None:
        if ack.in_reply_to not in self._inflight and self.on_report_ack is not None:
            if self.on_report_ack(ack.in_reply_to, ack.reason):
                return  # the answer to an update report, not to a sale batch
        flight = self._inflight.pop(ack.in_reply_to, None)
        self._awaiting_since = self._mono() if self._inflight else None  # the server answers
        if ack.reason is not None:
            self._note_error(ack.reason)
            log.error(
                "%s: server refused message %s: %s", self.config.terminal_id, ack.in_reply_to, ack.reason
            )
            if flight is not None and flight.kind == "reversals":
                self._rcursor = min(self._rcursor, min(flight.seqs) - 1)
            elif flight is not None:
                self._cursor = min(self._cursor, min(flight.seqs) - 1)
            return
        with write_txn(self.store.conn):  # settled and known current: one commit
            counts = self.store.apply_results(ack.results, self.config.terminal_id)
            self._mark_synced()
        if log.isEnabledFor(logging.INFO):  # its arguments cost more than the check
            log.info(
                "%s: ack for message %s: %s",
                self.config.terminal_id,
                ack.in_reply_to,
                ", ".join(f"{k} {v}" for k, v in counts.items() if v),
                extra={
                    "msg_id": ack.in_reply_to,
                    "sales": {f"{r.terminal_id}/{r.seq}": r.status for r in ack.results},
                },
            )
        self.stats.acked += counts["applied"]
        self.stats.rejected += counts["rejected"]
        self.stats.quarantined += counts["quarantined"]
        for r in ack.results:
            if r.quarantined:
                log.error(
                    "%s: sale %s held by the server for review: %s", self.config.terminal_id, r.seq, r.reason
                )
            elif r.rejected:
                self.stats.reject_reasons[r.reason or "?"] = (
                    self.stats.reject_reasons.get(r.reason or "?", 0) + 1
                )
                self._note_error(r.reason or "rejected")
                log.error("%s: sale %s rejected by server: %s", self.config.terminal_id, r.seq, r.reason)

    def _on_reversal_ack(self, ack: ReversalAck) -> None:
        """The answer to a reversal batch (or, unasked, waiting reversals now decided)."""
        if ack.in_reply_to in self._inflight:
            self._inflight.pop(ack.in_reply_to)
            self._awaiting_since = self._mono() if self._inflight else None
        counts = reversals.apply_results(self.store, ack.results, self.config.terminal_id)
        self.stats.reversals_acked += counts["applied"]
        self.stats.reversals_rejected += counts["rejected"]
        self.stats.reversals_waiting += counts["waiting"]
        for r in ack.results:
            if r.rejected:
                log.error("%s: reversal R%s rejected by server: %s", self.config.terminal_id, r.seq, r.reason)
        self._mark_synced()

    def _mark_synced(self) -> None:
        self.last_sync_ms = self.clock.now_ms()
        if self.last_sync_ms != self._last_sync_stored:  # several acks and deltas in one ms: once
            self.store.set_metas({"last_sync_ms": str(self.last_sync_ms)})
            self._last_sync_stored = self.last_sync_ms

    def _on_delta(self, delta: Delta, faults: list[ProtocolError] | None = None) -> None:
        current = self._delta_version
        if delta.version <= current:
            return
        if delta.version != current + 1:
            log.info(
                "%s: delta gap (have %d, got %d): catching up",
                self.config.terminal_id,
                current,
                delta.version,
            )
            self._need_catchup = True
            return
        # applied and known current (as _mark_synced records it): one commit, one meta write
        now = self.clock.now_ms()
        with write_txn(self.store.conn):
            unstored = None if now == self._last_sync_stored else now
            self.store.apply_changes(delta.version, delta.changes, synced_ms=unstored)
        self.last_sync_ms = self._last_sync_stored = now
        self._delta_version = delta.version  # committed
        self.store.settle_rules()
        self._report_faults(f"delta {delta.version}", faults or [])
        self.stats.deltas_applied += 1

    def _catch_up(self) -> None:
        """Fill a gap with the deltas the server still has, or take a whole snapshot."""
        now = self.clock.now_ms() + (self.clock_offset_ms or 0)
        current = self._delta_version
        try:
            faults: list[ProtocolError] = []
            if current > 0:
                deltas = self.http.deltas_since(current, now, faults)
                self._report_faults(f"catch-up after {current}", faults)
                if deltas and deltas[0].version == current + 1:
                    for d in deltas:
                        if d.version == self._delta_version + 1:
                            self.store.apply_changes(d.version, d.changes)  # its own transaction
                            self._delta_version = d.version
                    self.stats.catchups += 1
                    if self._delta_version == deltas[-1].version:
                        if len(deltas) < DELTA_PAGE_SIZE:
                            self._need_catchup = False
                            self._mark_synced()
                        return
                    # a gap inside the page: the numbering moved on (the server's database was
                    # restored, server.downstream.backup_marks): the rest comes as a snapshot
                elif not deltas:
                    self._need_catchup = False
                    self._mark_synced()
                    return
            faults.clear()  # those of the deltas were reported above
            snap = self.http.snapshot(now, faults)
            self.store.apply_changes(snap.version, snap.changes, snapshot=True)
            self._delta_version = snap.version
            if faults:
                self._report_faults(f"snapshot {snap.version}", faults)
            elif self.sync_fault is not None:  # the whole state read cleanly again
                self.sync_fault = None
                self.store.set_metas({"sync_fault": None})
            self.stats.snapshots += 1
            self._need_catchup = False
            self._mark_synced()
        except ServerUnreachable as exc:
            self._note_error("server_unreachable")
            log.warning("%s: catch-up failed, will retry: %s", self.config.terminal_id, exc)
            self._next_catchup = self._mono() + 1.0
        except ProtocolError as exc:
            log.error("%s: catch-up refused: %s", self.config.terminal_id, exc)
            self._next_catchup = self._mono() + 1.0

    def _expire_inflight(self) -> None:
        now = self._mono()
        expired = [m for m, f in self._inflight.items() if now - f.sent_at > self.config.ack_timeout_s]
        if expired:
            self.stats.resends += len(expired)
            for m in expired:
                del self._inflight[m]
            self._cursor = self._rcursor = 0  # resend everything still in the outboxes, oldest first

    def _send_outbox(self) -> None:
        if not self._inflight:
            # nothing awaits an ack: whatever the outbox holds is unsent, even below the
            # cursor (a batch the server refused, sales put back by a resend)
            self._cursor = 0
        more = True  # the outbox may hold sales after the cursor
        while more and len(self._inflight) < self.config.window:
            rows = self.store.outbox_wire_after(self._cursor, self.config.batch_size)
            # a short page is the whole outbox after the cursor: once it is sent, asking
            # again finds only sales sent or in flight (a sale journaled meanwhile pokes
            # the agent, which comes round again)
            more = len(rows) == self.config.batch_size
            inflight = {s for f in self._inflight.values() if f.kind == "sales" for s in f.seqs}
            rows = [(seq, sale) for seq, sale in rows if seq not in inflight]
            if not rows:
                break
            # the journal holds each sale exactly as validated when it was recorded, in its
            # canonical JSON: spliced into the signed batch, not decoded and encoded again
            body = sale_batch_body_json([sale for _, sale in rows])
            msg_id = uuid.uuid4().hex
            payload = seal_hmac_body_json(
                "sale_batch",
                self.config.terminal_id,
                body,
                self.keys.current,  # signed when sent: after a rotation, with the new key
                self.clock.now_ms(),
                msg_id,
            )
            if not self.link.publish(self._topics.sales, payload):
                return
            seqs = [seq for seq, _ in rows]
            if log.isEnabledFor(logging.INFO):  # its arguments cost more than the check
                log.info(
                    "%s: sent %d sale(s) in message %s",
                    self.config.terminal_id,
                    len(seqs),
                    msg_id,
                    extra={"msg_id": msg_id, "sale_ids": self._sale_ids(seqs)},
                )
            self._inflight[msg_id] = _InFlight(seqs, self._mono())
            if self._awaiting_since is None:
                self._awaiting_since = self._mono()
            self._cursor = max(seqs)
            self.stats.batches_sent += 1
            self.stats.sales_sent += len(seqs)
        self._send_reversals()

    def _send_reversals(self) -> None:
        """Reversals from their own outbox, after the sales (a reversal's sale goes first)."""
        more = True  # as with the sales (_send_outbox): a short page is the whole outbox
        while more and len(self._inflight) < self.config.window:
            rows = reversals.outbox_after(self.store, self._rcursor, self.config.batch_size)
            more = len(rows) == self.config.batch_size
            inflight = {s for f in self._inflight.values() if f.kind == "reversals" for s in f.seqs}
            rows = [(seq, r) for seq, r in rows if seq not in inflight]
            if not rows:
                return
            msg_id = uuid.uuid4().hex
            payload = seal_hmac(
                "reversal_batch",
                self.config.terminal_id,
                {"reversals": [r for _, r in rows]},
                self.config.secret,
                self.clock.now_ms(),
                msg_id,
            )
            if not self.link.publish(self._topics.reversals, payload):
                return
            seqs = [seq for seq, _ in rows]
            self._inflight[msg_id] = _InFlight(seqs, self._mono(), "reversals")
            if self._awaiting_since is None:
                self._awaiting_since = self._mono()
            self._rcursor = max(seqs)
            self.stats.batches_sent += 1
            self.stats.reversals_sent += len(seqs)

    def _sale_ids(self, seqs: list[int]) -> list[str]:
        return [f"{self.config.terminal_id}/{s}" for s in seqs]

    def watermark_ms(self) -> int:
        """No sale of this terminal before this time is still unsent. Taken under the
        journal lock, on the clock sales are dated by, so a tap being decided right now
        cannot slip in behind it."""
        return self._watermark()[0]

    def _watermark(self) -> tuple[int, int | None]:
        """:meth:`watermark_ms`, and the oldest unsent sale or reversal it was taken from."""
        with self._journal_lock:
            oldest = self.store.oldest_pending_ms()
            return (oldest if oldest is not None else self._sale_clock()), oldest

    def status(self) -> Status:
        self._version_seen = version = self._delta_version
        free, total, journal = disk_and_journal(self.config.db_path)
        pending = self.store.pending_count()
        watermark, oldest = self._watermark()
        return Status(
            state="online" if self.online else "offline",
            pending=pending,
            watermark_ms=watermark,
            delta_version=version,
            clock_ms=self.clock.now_ms(),
            clock_offset_ms=self.clock_offset_ms,
            offline_since_ms=self.offline_since_ms,
            software=self.config.software,
            sync_fault=self.sync_fault,
            instance=self.instance,
            oldest_unsent_ms=oldest if pending else None,
            last_sync_ms=self.last_sync_ms,
            disk_free_bytes=free,
            disk_total_bytes=total,
            journal_bytes=journal,
            last_error=self.last_error[0] if self.last_error else None,
            last_error_ms=self.last_error[1] if self.last_error else None,
        )

    def send_status(self) -> None:
        payload = seal_hmac(
            "status",
            self.config.terminal_id,
            self.status().to_body(),
            self.keys.current,
            self.clock.now_ms(),
        )
        if self.link.publish(self._topics.status, payload, retain=True):
            self._last_heartbeat = self._mono()

    def send_update_report(self, report: UpdateReport) -> str | None:
        """Publish an update report; its message id (the server's ack names it), or None
        when it could not be handed to the link (offline: try again later)."""
        msg_id = uuid.uuid4().hex
        payload = seal_hmac(
            "update_report",
            self.config.terminal_id,
            report.to_body(),
            self.config.secret,
            self.clock.now_ms(),
            msg_id,
        )
        if not self.online or not self.link.publish(self._topics.update_report, payload):
            return None
        return msg_id

    def _will(self) -> tuple[str, bytes, bool]:
        body = Status(
            state="offline",
            delta_version=self._version_seen,
            clock_ms=self.clock.now_ms(),
            software=self.config.software,
            instance=self.instance,
        ).to_body()
        payload = seal_hmac("status", self.config.terminal_id, body, self.keys.current, self.clock.now_ms())
        return self._topics.status, payload, True


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _boot_id() -> str:
    """This boot of the machine (Linux); a clock measured in another boot is not trusted."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"
