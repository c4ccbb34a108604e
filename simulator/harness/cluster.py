"""A whole system on one machine: broker, server and terminals, wired for faults.

:class:`Cluster` starts an MQTT broker (embedded or Mosquitto), the real server
(:class:`~server.service.ServerService`: HTTP, ingest worker, delta publisher) and real
terminals (:class:`~terminal.agent.Terminal`), each terminal reaching the broker and the
server through its own :class:`~simulator.harness.netproxy.NetProxy` so its network can be cut.
Terminals are provisioned over the real HTTP API. :meth:`Cluster.audit` compares every
terminal's journal with the server's sales and ledger from the outside.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.books import ledger
from server.closing.check import all_violations
from server.downstream.deltas import current_version
from server.infra.auth import MAX_EXPIRY_DAYS, create_token
from server.infra.db import counter, open_db, write_txn
from server.service import ServerService
from shared.broker import Broker, start_broker
from shared.clock import Clock, SystemClock
from simulator.harness.netproxy import NetProxy
from simulator.harness.world import World, demo_world
from terminal import reversals
from terminal.agent import Terminal
from terminal.config import TerminalConfig


@dataclass
class TerminalHandle:
    terminal: Terminal
    config: TerminalConfig
    mqtt_proxy: NetProxy
    http_proxy: NetProxy

    @property
    def id(self) -> str:
        return self.config.terminal_id

    def cut(self) -> None:
        self.mqtt_proxy.cut()
        self.http_proxy.cut()

    def heal(self) -> None:
        self.mqtt_proxy.heal()
        self.http_proxy.heal()


@dataclass
class Audit:
    approved: int
    applied: int
    pending: int
    duplicates_ignored: int
    ledger_sum_fen: int
    mismatches: int
    violations: list[dict[str, str]] = field(default_factory=list)
    mismatch_details: list[str] = field(default_factory=list)
    reversals_approved: int = 0  # reversals (冲正) the terminals journaled and announced
    reversals_applied: int = 0  # reversals the server applied

    def to_json(self) -> dict[str, Any]:
        return {
            "approved": self.approved,
            "applied": self.applied,
            "reversals_approved": self.reversals_approved,
            "reversals_applied": self.reversals_applied,
            "pending": self.pending,
            "duplicates_ignored": self.duplicates_ignored,
            "ledger_sum_fen": self.ledger_sum_fen,
            "mismatches": self.mismatches,
            "violations": self.violations,
            "mismatch_details": self.mismatch_details[:20],
        }


class Cluster:
    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        broker: str | Broker = "embedded",
        clock: Clock | None = None,
        terminal_prefix: str | None = None,
        server_config: dict[str, Any] | None = None,
    ) -> None:
        """``broker``: a kind to start ("embedded", "mosquitto", "auto") or a running one.
        ``terminal_prefix``: name terminals ``<prefix>-<n>`` instead of ``T0001`` … (tests
        sharing one broker keep their retained status messages apart). ``server_config``:
        extra server settings (e.g. ``YEAR_END_REFUND_TO``)."""
        self.terminal_prefix = terminal_prefix
        self.server_config = dict(server_config or {})
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="canteen-cluster-"))
        self._own_broker = isinstance(broker, str)
        self.broker_kind = broker if isinstance(broker, str) else broker.kind
        self.clock = clock or SystemClock()
        self.broker: Broker | None = None if isinstance(broker, str) else broker
        self.server: ServerService | None = None
        self.terminals: list[TerminalHandle] = []
        self._admin_token: str | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Cluster:
        if self.broker is None:
            self.broker = start_broker(self.broker_kind)
        self.server = ServerService(
            self.broker.url, config={"HOME": str(self.workdir), **self.server_config}, clock=self.clock
        ).start()
        return self

    def stop(self) -> None:
        for h in self.terminals:
            h.terminal.stop()
            h.mqtt_proxy.close()
            h.http_proxy.close()
        if self.server is not None:
            self.server.stop()
        if self.broker is not None and self._own_broker:
            self.broker.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- server side -----------------------------------------------------------------------

    @property
    def db_path(self) -> str:
        assert self.server is not None
        return str(self.server.app.config["DATABASE"])

    def db(self) -> sqlite3.Connection:
        return open_db(self.db_path)

    def admin_token(self) -> str:
        if self._admin_token is None:
            conn = self.db()
            with write_txn(conn):
                self._admin_token = create_token(  # a simulated run may span years of its clock
                    conn, "admin", self.clock.now_ms(), label="simulator", expires_days=MAX_EXPIRY_DAYS
                )
            conn.close()
        return self._admin_token

    def http(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.server is not None
        req = urllib.request.Request(
            self.server.base_url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.admin_token()}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def demo_world(self, diners: int) -> World:
        """:func:`~simulator.harness.world.demo_world` written into the server's database now."""
        conn = self.db()
        try:
            return demo_world(conn, self.clock.now_ms(), diners=diners)
        finally:
            conn.close()

    # --- terminals -------------------------------------------------------------------------

    def terminal_config(
        self, canteen_id: str, terminal_id: str | None = None, **overrides: Any
    ) -> tuple[TerminalConfig, NetProxy, NetProxy]:
        """A new terminal registered at the server (``terminal_id``, else the next in
        ``terminal_prefix``, else the server's choice) and its configuration, reaching the
        broker and the server through proxies of its own (returned too); not started."""
        assert self.server is not None and self.broker is not None
        body: dict[str, Any] = {"canteen_id": canteen_id}
        if terminal_id is None and self.terminal_prefix:
            terminal_id = f"{self.terminal_prefix}-{len(self.terminals) + 1}"
        if terminal_id is not None:
            body["terminal_id"] = terminal_id
        creds = self.http("POST", "/api/v1/terminals", body)
        mqtt_proxy = NetProxy(int(self.broker.url.rsplit(":", 1)[1]))
        http_proxy = NetProxy(self.server.http_port)
        config = TerminalConfig.from_dict(
            {
                **creds,
                "broker_url": f"mqtt://127.0.0.1:{mqtt_proxy.port}",
                "server_url": f"http://127.0.0.1:{http_proxy.port}",
                "db_path": str(self.workdir / f"terminal-{creds['terminal_id']}.sqlite"),
                "ack_timeout_s": 3.0,
                "heartbeat_s": 1.0,
                "reader": "simulated",  # in-process: taps come from code (present()), not stdin
                **overrides,
            }
        )
        return config, mqtt_proxy, http_proxy

    def add_terminal(self, canteen_id: str, **overrides: Any) -> TerminalHandle:
        config, mqtt_proxy, http_proxy = self.terminal_config(canteen_id, **overrides)
        handle = TerminalHandle(Terminal(config, self.clock).start(), config, mqtt_proxy, http_proxy)
        self.terminals.append(handle)
        return handle

    def wait_synced(self, timeout_s: float = 20.0) -> bool:
        """Every terminal in sync (online, the server present) and caught up with its deltas."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            conn = self.db()
            version = current_version(conn)
            conn.close()
            if all(
                h.terminal.sync.in_sync and h.terminal.store.delta_version >= version for h in self.terminals
            ):
                return True
            time.sleep(0.05)
        return False

    def pending(self) -> int:
        """Sales and reversals not yet answered for good by the server."""
        return sum(
            h.terminal.store.pending_count() + reversals.pending_count(h.terminal.store)
            for h in self.terminals
        )

    def drain(self, timeout_s: float = 60.0) -> bool:
        """Wait until every outbox is empty (every sale acknowledged by the server)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pending() == 0:
                return True
            time.sleep(0.05)
        return self.pending() == 0

    # --- the audit -------------------------------------------------------------------------

    def audit(self) -> Audit:
        """Compare every terminal's journal with the server, sale by sale, from outside."""
        conn = self.db()
        server_sales: dict[str, sqlite3.Row] = {
            r["uuid"]: r for r in conn.execute("SELECT uuid, terminal_id, seq, status, amount_fen FROM sales")
        }
        server_reversals: dict[str, sqlite3.Row] = {
            r["uuid"]: r
            for r in conn.execute(
                "SELECT uuid, terminal_id, seq, sale_seq, amount_fen, status, reason FROM reversals"
            )
        }
        details: list[str] = []
        approved = reversals_approved = 0
        pending = 0
        seen: set[str] = set()
        seen_reversals: set[str] = set()
        for h in self.terminals:
            tconn = sqlite3.connect(h.config.db_path)
            tconn.row_factory = sqlite3.Row
            for j in tconn.execute("SELECT seq, uuid, amount_fen, status FROM journal"):
                approved += 1
                seen.add(j["uuid"])
                s = server_sales.get(j["uuid"])
                if s is None:
                    details.append(f"{h.id}/{j['seq']}: approved, not at server")
                elif s["status"] != "applied":
                    details.append(f"{h.id}/{j['seq']}: server {s['status']}")
                elif s["amount_fen"] != j["amount_fen"] or s["seq"] != j["seq"] or s["terminal_id"] != h.id:
                    details.append(f"{h.id}/{j['seq']}: differs from server record")
                if j["status"] == "rejected":
                    details.append(f"{h.id}/{j['seq']}: terminal marked rejected")
            pending += tconn.execute("SELECT count(*) FROM outbox").fetchone()[0]
            pending += tconn.execute("SELECT count(*) FROM reversal_outbox").fetchone()[0]
            for r in tconn.execute("SELECT seq, uuid, sale_seq, amount_fen, status FROM reversals"):
                reversals_approved += 1
                seen_reversals.add(r["uuid"])
                sr = server_reversals.get(r["uuid"])
                if sr is None:
                    details.append(f"{h.id}/R{r['seq']}: reversal journaled, not at server")
                elif sr["status"] != "applied":
                    details.append(f"{h.id}/R{r['seq']}: reversal {sr['status']} at server ({sr['reason']})")
                elif (sr["terminal_id"], sr["seq"], sr["sale_seq"], sr["amount_fen"]) != (
                    h.id,
                    r["seq"],
                    r["sale_seq"],
                    r["amount_fen"],
                ):
                    details.append(f"{h.id}/R{r['seq']}: reversal differs from server record")
            tconn.close()
        applied = sum(1 for s in server_sales.values() if s["status"] == "applied")
        for u, s in server_sales.items():
            if s["status"] == "applied" and u not in seen:
                details.append(f"{s['terminal_id']}/{s['seq']}: applied at server, unknown to terminal")
        for u, sr in server_reversals.items():
            if sr["status"] == "applied" and u not in seen_reversals:
                details.append(
                    f"{sr['terminal_id']}/R{sr['seq']}: reversal applied at server, unknown to terminal"
                )
        violations = [v.to_json() for v in all_violations(conn)]
        result = Audit(
            approved=approved,
            applied=applied,
            pending=pending,
            duplicates_ignored=counter(conn, "sales_duplicate"),
            ledger_sum_fen=ledger.ledger_sum(conn),
            mismatches=len(details) + len(violations),
            violations=violations,
            mismatch_details=details,
            reversals_approved=reversals_approved,
            reversals_applied=sum(1 for r in server_reversals.values() if r["status"] == "applied"),
        )
        conn.close()
        return result
