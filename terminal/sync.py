"""The terminal's sync agent: outbox up, acks and deltas down, heartbeats, snapshots.

One thread owns all sync work; the MQTT link's callbacks only put messages on its queue.
This module is the agent itself — the thread, the link's state, the inbound messages told
apart and handled, the status and the will; its parts are modules of their own: the link,
transport and own topics (:mod:`terminal.sync_link`), the outboxes going up and
their acks (:mod:`terminal.sync_upstream`), deltas and catch-up (:mod:`terminal.sync_downstream`),
the clock offset (:mod:`terminal.sync_clock`), the server's presence
(:mod:`terminal.sync_presence`), the last error and last sync kept on disk
(:mod:`terminal.sync_record`) and the counters (:mod:`terminal.sync_stats`).

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
* **Batches.** Acks and deltas that arrive together (an ack and the delta the server
  published after it, usually) are settled and applied in one transaction, up to
  :data:`BATCH_MESSAGES` of them (:meth:`terminal.store.Store.begin_batch`); an error in
  one rolls them all back, and the agent reads back what it had taken as written.
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
from collections.abc import Callable
from dataclasses import replace

from shared.clock import Clock
from shared.ids import uuid4_hex
from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import (
    Ack,
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
from shared.protocol.rekey import Rekey, key_id, open_key
from terminal import journal_keep
from terminal.config import TerminalConfig
from terminal.credentials import Keyring
from terminal.health import disk_and_journal
from terminal.server_http import ServerHttp, ServerUnreachable
from terminal.store import Store
from terminal.sync_clock import ServerClock, machine_boot_id
from terminal.sync_downstream import Downstream
from terminal.sync_link import Link, OwnTopics, Transport
from terminal.sync_presence import ServerPresence
from terminal.sync_record import SyncRecord
from terminal.sync_stats import SyncStats
from terminal.sync_upstream import Upstream

log = logging.getLogger(__name__)

# acks and deltas applied in one transaction at most (SyncAgent._drain_inbox)
BATCH_MESSAGES = 32


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
        # the last error and the last sync, kept across restarts
        self.record = SyncRecord(self.store, lambda: self.clock.now_ms())
        self._broker_refusals = 0
        # the network thread appends, the sync thread pops (both atomic on a deque): a
        # queue.Queue's lock and condition cost more than the messages' own handling here
        self._inbox: collections.deque[tuple[str, object]] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_heartbeat = 0.0
        self.stats = SyncStats()
        self.downstream = Downstream(
            config,
            self.store,
            self.http,
            self.stats,
            self.record,
            lambda: self.clock.now_ms(),
            lambda: self.clock.now_ms() + (self.clock_offset_ms or 0),
            self._mono,
            self._status_due,
        )
        self._version_seen = self.downstream.version  # read by the will (network thread)
        self._on_link_change = on_link_change or (lambda online: None)
        self._sale_clock = sale_clock or clock.now_ms  # the clock sales are dated by
        self._reported_in_sync: bool | None = None
        self.presence = ServerPresence(
            config,
            self.record,
            lambda: self.clock.now_ms() + (self.clock_offset_ms or 0),
            self._mono,
            lambda: self.in_sync,
            self.downstream.on_server_head,
        )
        self.instance = secrets.token_hex(8)  # this process (see "One identity, one process")
        self._own_status_seen = False
        # the last status this process published and the key it signed it with: read back
        # from the broker as these very bytes, it needs no second opening (_on_message)
        self._sent_status: tuple[bytes, bytes] | None = None
        self.identity_conflict: str | None = None  # the other instance's id, once seen
        self._on_identity_conflict = on_identity_conflict or (lambda other: None)
        # signed updates (terminal.updater sets these): an offer came; an ack answers a report
        self.on_update_offer: Callable[[UpdateOffer], None] | None = None
        self.on_report_ack: Callable[[str, str | None], bool] | None = None
        self.online = False
        # offline since the last time this terminal knew it was offline, or since now
        self.offline_since_ms: int | None = (
            _int_or_none(self.store.get_meta("offline_since_ms")) or clock.now_ms()
        )
        self.server_clock = ServerClock(
            config,
            self.store,
            self.http,
            lambda: self.clock.now_ms(),
            self._mono,
            transport.boot_id or machine_boot_id(),
        )
        self.store.set_metas(
            {
                "link_state": "offline",
                "offline_since_ms": str(self.offline_since_ms),
                "identity_conflict": None,
            }
        )
        self._topics = own = OwnTopics.of(config.terminal_id)
        # ``mqtt_light_subscriptions``: QoS 0 where a lost message is repaired without the
        # broker (each QoS 1 subscription is a JetStream consumer on NATS: docs/scaling.md)
        light = 0 if config.mqtt_light_subscriptions else 1
        subscriptions = [
            (own.ack, light),  # unanswered after ack_timeout_s: sent again, answered `duplicate`
            # a lost last delta shows no gap until the next one: QoS 0 only where the server's
            # presence says its newest version (PRESENCE_DELTA_VERSION), which reveals it
            (topics.DELTA, 0 if config.mqtt_light_deltas else 1),
            (topics.SERVER, light),  # repeated every few s; an unheard server expires (server_silence_s)
            (own.status, light),  # our own status read back: the next heartbeat comes
            (own.update_offer, light),  # all offers again every republish_s (server.downstream)
            (own.backup, 1),  # sent once per change: a lost restore mark delays the resend
            (own.rekey, light),  # offered again every REKEY_REPEAT_S, and asked over HTTP on connect
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
        self.upstream = Upstream(
            config,
            self.store,
            self.keys,
            self.link,
            own,
            self.stats,
            self.record,
            lambda: self.clock.now_ms(),
            self._mono,
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
        return (
            self.online and not self.downstream.need_catchup and self.server_present and not self.ack_overdue
        )

    def assume(self, in_sync: bool) -> None:
        """For a terminal run with no network (tests, benchmarks): take the link as up, the
        server present and the cache current — or the link as down."""
        self.online, self.downstream.need_catchup = in_sync, not in_sync
        self.presence.heard = self._mono() + 1e9 if in_sync else None  # present until told otherwise
        self.upstream.awaiting_since = None

    @property
    def server_present(self) -> bool:
        """The server's "online" presence was heard within ``server_silence_s``."""
        return self.presence.present

    @property
    def ack_overdue(self) -> bool:
        """A batch has waited longer than ``ack_timeout_s`` with no ack from the server."""
        waiting = self.upstream.awaiting_since
        return waiting is not None and self._mono() - waiting > self.config.ack_timeout_s

    @property
    def last_error(self) -> tuple[str, int] | None:
        """The last error, for the status: (stable code, when)."""
        return self.record.last_error

    @property
    def last_sync_ms(self) -> int | None:
        """The last moment the cache was known current (see the module doc)."""
        return self.record.last_sync_ms

    @last_sync_ms.setter
    def last_sync_ms(self, ms: int | None) -> None:
        self.record.last_sync_ms = ms

    @property
    def sync_fault(self) -> str | None:
        """The code of downstream changes skipped as unreadable, until a snapshot reads cleanly."""
        return self.downstream.sync_fault

    @property
    def clock_offset_ms(self) -> int | None:
        """The measured offset server − terminal, None until measured in this boot."""
        return self.server_clock.offset_ms

    @clock_offset_ms.setter
    def clock_offset_ms(self, offset: int | None) -> None:
        self.server_clock.offset_ms = offset

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
            if self._mono() >= self.server_clock.next_probe:
                self.server_clock.probe()
            if self.downstream.need_catchup and self._mono() >= self.downstream.next_catchup:
                self._catch_up()
            if self._need_rekey_check and not self.downstream.need_catchup:
                self._ask_rekey()
            self.upstream.expire()
            self._send_outbox()
            if not self.upstream.inflight:
                # nothing sent waits for an answer (a late ack settled what had timed out, and
                # its resend was lost): not overdue, or the terminal would stay on its offline
                # limits until its next sale is acknowledged (found by canteen-sim vopr)
                self.upstream.awaiting_since = None
            if self._mono() - self._last_heartbeat >= self.config.heartbeat_s:
                self.send_status()
        self._report_link()
        refusals = getattr(self.link, "refusals", 0)  # the simulator's link has none
        if refusals > self._broker_refusals:
            self._broker_refusals = refusals
            self.record.note_error("broker_refused")

    def _drain_inbox(self) -> None:
        inbox = self._inbox
        ack_topic, delta_topic = self._topics.ack, topics.DELTA
        while inbox:  # the sync thread is the only one taking from it
            kind, value = inbox.popleft()
            if kind == "link":
                self._on_link(bool(value))
                continue
            topic, payload = value  # type: ignore[misc]
            if topic != ack_topic and topic != delta_topic:
                self._on_message(topic, payload)
                continue
            # an ack and the delta the server published after it usually arrive together:
            # the acks and deltas in a row share one transaction (Store.begin_batch), one
            # commit instead of one per message — up to BATCH_MESSAGES of them, so that a
            # tap waits for the write lock no longer than that many take
            store = self.store
            store.begin_batch()
            try:
                self._on_message(topic, payload)
                batched = (ack_topic, delta_topic)
                left = BATCH_MESSAGES - 1
                while left and inbox and inbox[0][0] == "msg" and inbox[0][1][0] in batched:  # type: ignore[index]
                    topic, payload = inbox.popleft()[1]  # type: ignore[misc]
                    self._on_message(topic, payload)
                    left -= 1
                store.end_batch(commit=True)
            except BaseException:  # re-raised: rolled back (a commit that failed too), read back
                store.end_batch(commit=False)
                self._after_rollback()
                raise

    def _after_rollback(self) -> None:
        """A batch of acks and deltas was rolled back (an error in one of them): what this
        agent holds in memory of their writes is read back from the database — the delta
        version and the stored sync time — and the outbox is sent again from its start (the
        acks' sales, no longer in flight, are still in it; the server answers the copies
        with their first results)."""
        self.downstream.version = self.store.delta_version
        self.record.stored_sync_ms = _int_or_none(self.store.get_meta("last_sync_ms"))
        self.upstream.cursor = self.upstream.rcursor = 0

    def _on_link(self, up: bool) -> None:
        if up:
            self.online = True
            self.presence.heard = None  # only a presence heard on this connection counts
            self.upstream.awaiting_since = None
            self.upstream.resend_all()  # anything in flight on the old connection may be lost
            self._last_heartbeat = 0.0
            self.server_clock.next_probe = 0.0
            # deltas published while we were away are not all retained: ask the server
            # what we missed before trusting the cache again
            self.downstream.need_catchup = True
            self.downstream.next_catchup = 0.0
            self._need_rekey_check = True  # a key offered while we were away
            log.info("%s: online", self.config.terminal_id)
        else:
            if self.in_sync:
                self.record.mark_synced()  # the cache was current until this moment
            self.online = False
            self.upstream.awaiting_since = None
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
                self.downstream.on_delta(*open_delta(payload, self._verifier))
            elif topic == topics.SERVER:
                env = open_envelope(payload, server=self._verifier, expect_type="server_status")
                self.presence.on_presence(ServerStatus.from_body(env.body), env.sent_at_ms)
            elif topic == own.backup:
                env = open_envelope(payload, server=self._verifier, expect_type="backup_mark")
                self._on_backup_mark(BackupMark.from_body(env.body))
            elif topic == own.status:
                sent = self._sent_status
                if sent is not None and payload == sent[0] and sent[1] in self.keys.all():
                    # the bytes this process sealed, with a key it still holds: opening them
                    # again finds its own instance (tests/test_terminal_sync_batch_fast.py)
                    self._own_status_seen = True
                    return
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
                    self.upstream.on_reversal_ack(rack)
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
                self.record.note_error(exc.code)
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

    def _on_backup_mark(self, mark: BackupMark) -> None:
        """The server's backup mark: prune the journal up to it; after a restore, send again
        what the server lost (``terminal.journal_keep``)."""
        if mark.terminal_id != self.config.terminal_id:
            raise ProtocolError("terminal_mismatch", f"backup mark for {mark.terminal_id}")
        keep_ms = int(self.config.journal_keep_days * 86_400_000)
        # not under the journal lock: each step is its own short transaction, taps go on
        outcome = journal_keep.on_mark(self.store, mark, self.clock.now_ms(), keep_ms)
        if outcome.requeued:
            self.upstream.cursor = self.upstream.rcursor = 0  # requeued below what this round already sent
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
        """The offset from an ack's send time, if it answers a message still in flight
        (:meth:`terminal.sync_clock.ServerClock.measure_ack`)."""
        flight = self.upstream.inflight.get(in_reply_to)
        self.server_clock.measure_ack(server_ms, None if flight is None else flight.sent_at)

    def _on_ack(self, ack: Ack) -> None:
        if ack.in_reply_to not in self.upstream.inflight and self.on_report_ack is not None:
            if self.on_report_ack(ack.in_reply_to, ack.reason):
                return  # the answer to an update report, not to a sale batch
        self.upstream.on_ack(ack)

    def _catch_up(self) -> None:
        """Fill a gap (:meth:`terminal.sync_downstream.Downstream.catch_up`); by this name the
        simulator tells a crash while catching up (``simulator.vopr.terminal_node.CRASH_SITES``)."""
        self.downstream.catch_up()

    def _status_due(self) -> None:
        """The next status goes at once (something new to report)."""
        self._last_heartbeat = 0.0

    def _send_outbox(self) -> None:
        """The outboxes up (:meth:`terminal.sync_upstream.Upstream.send`); by this name the
        simulator tells a crash while sending (``simulator.vopr.terminal_node.CRASH_SITES``)."""
        self.upstream.send()

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
        self._version_seen = version = self.downstream.version
        free, total, journal = disk_and_journal(self.config.db_path)
        with self._journal_lock:  # the watermark as watermark_ms takes it, the count with it
            pending, oldest = self.store.pending_and_oldest()
            watermark = oldest if oldest is not None else self._sale_clock()
        return Status(
            state="online" if self.online else "offline",
            pending=pending,
            watermark_ms=watermark,
            delta_version=version,
            clock_ms=self.clock.now_ms(),
            clock_offset_ms=self.clock_offset_ms,
            offline_since_ms=self.offline_since_ms,
            software=self.config.software,
            sync_fault=self.downstream.sync_fault,
            instance=self.instance,
            oldest_unsent_ms=oldest if pending else None,
            last_sync_ms=self.record.last_sync_ms,
            disk_free_bytes=free,
            disk_total_bytes=total,
            journal_bytes=journal,
            last_error=self.record.last_error[0] if self.record.last_error else None,
            last_error_ms=self.record.last_error[1] if self.record.last_error else None,
        )

    def send_status(self) -> None:
        key = self.keys.current
        body = self.status().to_body()
        payload = seal_hmac("status", self.config.terminal_id, body, key, self.clock.now_ms())
        self._sent_status = payload, key
        if self.link.publish(self._topics.status, payload, retain=True):
            self._last_heartbeat = self._mono()

    def send_update_report(self, report: UpdateReport) -> str | None:
        """Publish an update report; its message id (the server's ack names it), or None
        when it could not be handed to the link (offline: try again later)."""
        msg_id = uuid4_hex()
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
