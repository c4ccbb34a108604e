"""The operator's day close (日结) on the terminal: the Z-report numbered, kept, shown, sent.

:meth:`DayClose.close` (the operator chose 日结 on the device, :mod:`terminal.operator_menu`):

1. in one durable transaction, numbers the close (1, 2, 3 … per terminal), takes the sales
   journaled since the previous close (by sequence number) and the reversals (冲正) made
   since it (by the reversals' own sequence number, up to the last one announced:
   :mod:`terminal.zreport` says why) and stores the report in ``day_closes`` — kept for
   good (the reversal range lives in the report's JSON: no column needed);
2. writes it as files beside the database (``z-reports/Z0001-2026-01-06.txt`` in Chinese,
   and ``.json``; ``z_report_dir`` in the terminal config names another folder);
3. shows it on the customer display and tells listeners (``day_close`` event);
4. sends it to the server: a terminal-signed HTTP request
   (:meth:`~terminal.server_http.ServerHttp.day_close`), which the server compares with
   what it applied (:mod:`server.closing.day_closes`). A close not yet received (offline,
   server down) is sent again by the sender thread until the server answers; each answer is
   stored with the close. The server keys closes on (terminal, number), so a resend
   is harmless.

It works on its own connection to the terminal database, so a close and a sale never
interleave: a sale journaled during the close belongs to the next one.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from hardware.display import Screen
from shared.sqlite_txn import write_txn
from terminal.server_http import ServerRefused, ServerUnreachable
from terminal.store import Store
from terminal.zreport import ZReport, build, render_zh, screen_lines

log = logging.getLogger(__name__)


def report_folder(config: Any) -> Path:
    """Where the Z-report files go: ``z_report_dir``, else ``z-reports/`` beside the database."""
    return Path(config.z_report_dir) if config.z_report_dir else Path(config.db_path).parent / "z-reports"


class DayClose:
    def __init__(self, terminal: Any, *, retry_s: float = 10.0) -> None:  # terminal.agent.Terminal
        self.terminal = terminal
        self.retry_s = retry_s
        self.store = Store(terminal.config.db_path)
        self._lock = threading.Lock()  # one close or send at a time on this connection
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- closing -------------------------------------------------------------------------

    def close(self, operator_card: str) -> ZReport:
        """Close the day now: the report, stored, written, shown and (in the background) sent."""
        config = self.terminal.config
        now = self.terminal.sale_time()
        names = {sku: item.name for sku, item in self.terminal.rules()[0].items.items()}
        with self._lock, write_txn(self.store.conn) as conn:
            prev = conn.execute(
                "SELECT number, seq_to, closed_at_ms, report_json FROM day_closes "
                "ORDER BY number DESC LIMIT 1"
            ).fetchone()
            number, seq_from = (prev[0] + 1, prev[1] + 1) if prev else (1, 1)
            seq_to = max(
                int(conn.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()[0]), seq_from - 1
            )
            sales = conn.execute(
                "SELECT seq, occurred_at_ms, kind, meal_period, method, amount_fen, status, reason, "
                "sale_json FROM journal WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (seq_from, seq_to),
            ).fetchall()
            declines = conn.execute(
                "SELECT count(*) FROM declines WHERE at_ms > ? AND at_ms <= ?", (prev[2] if prev else -1, now)
            ).fetchone()[0]
            unsent = conn.execute(
                "SELECT count(*) FROM outbox WHERE seq BETWEEN ? AND ?", (seq_from, seq_to)
            ).fetchone()[0]
            rev_from, rev_to = reversal_range(conn, prev)
            reversals = conn.execute(
                "SELECT seq, amount_fen, method, status FROM reversals "
                "WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (rev_from, rev_to),
            ).fetchall()
            rev_unsent = conn.execute(
                "SELECT count(*) FROM reversal_outbox WHERE seq BETWEEN ? AND ?", (rev_from, rev_to)
            ).fetchone()[0]
            z = build(
                number=number,
                terminal_id=config.terminal_id,
                canteen_id=config.canteen_id,
                closed_at_ms=now,
                closed_by=operator_card or "?",
                seq_from=seq_from,
                seq_to=seq_to,
                sales=[dict(r) for r in sales],
                item_names=names,
                declines=int(declines),
                unsent=int(unsent),
                rev_seq_from=rev_from,
                rev_seq_to=rev_to,
                reversals=[dict(r) for r in reversals],
                reversals_unsent=int(rev_unsent),
            )
            conn.execute(
                "INSERT INTO day_closes(number, closed_at_ms, seq_from, seq_to, report_json) "
                "VALUES (?, ?, ?, ?, ?)",
                (number, now, seq_from, seq_to, json.dumps(z.to_json(), ensure_ascii=False)),
            )
        path = self._write_files(z)
        log.info(
            "%s: day close %s (%d sales, %d fen) written to %s",
            config.terminal_id,
            z.name,
            z.sales.count,
            z.sales.amount_fen,
            path,
        )
        self.terminal.display.show(Screen(screen_lines(z), "ok"))
        self.terminal.on_event({"event": "day_close", "number": number, "file": str(path), **_summary(z)})
        self._wake.set()
        return z

    def _write_files(self, z: ZReport) -> Path:
        folder = report_folder(self.terminal.config)
        folder.mkdir(parents=True, exist_ok=True)
        base = folder / f"{z.name}-{z.business_day}"
        for suffix, text in (
            (".json", json.dumps(z.to_json(), ensure_ascii=False, indent=2) + "\n"),
            (".txt", render_zh(z)),
        ):
            tmp = base.with_suffix(suffix + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, base.with_suffix(suffix))
        return base.with_suffix(".txt")

    # --- what is kept --------------------------------------------------------------------

    def reports(self) -> list[dict[str, Any]]:
        """Every close kept on this terminal, oldest first, with the server's answer."""
        with self._lock:
            return kept_closes(self.store.conn)

    # --- sending -------------------------------------------------------------------------

    def send_pending(self) -> int:
        """Send every close the server has not answered yet, oldest first; how many it
        answered. Stops at the first one it cannot reach the server with."""
        with self._lock:
            rows = self.store.conn.execute(
                "SELECT number, report_json FROM day_closes WHERE sent_at_ms IS NULL ORDER BY number"
            ).fetchall()
        sent = 0
        for number, report in rows:
            now = self.terminal.clock.now_ms()
            try:
                answer: dict[str, Any] = dict(self.terminal.sync.http.day_close(json.loads(report), now))
            except ServerRefused as exc:
                log.error("day close Z%04d refused by the server: %s", number, exc.code)
                answer = {"status": "refused", "code": exc.code}
            except ServerUnreachable as exc:
                log.info("day close Z%04d not sent yet: %s", number, exc)
                return sent
            with self._lock, write_txn(self.store.conn) as conn:
                conn.execute(
                    "UPDATE day_closes SET sent_at_ms = ?, server_json = ? WHERE number = ?",
                    (now, json.dumps(answer, ensure_ascii=False), number),
                )
            log.info("day close Z%04d received by the server: %s", number, answer.get("status"))
            sent += 1
        return sent

    def unsent(self) -> int:
        with self._lock:
            return int(
                self.store.conn.execute(
                    "SELECT count(*) FROM day_closes WHERE sent_at_ms IS NULL"
                ).fetchone()[0]
            )

    def poke(self) -> None:
        """Try sending now rather than at the next retry (the link just came back)."""
        self._wake.set()

    def start(self) -> DayClose:
        self._thread = threading.Thread(target=self._run, name="day-close-sender", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.terminal.sync.online and self.unsent():
                self.send_pending()
            self._wake.wait(self.retry_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self.store.close()


def reversal_range(conn: sqlite3.Connection, prev: sqlite3.Row | None) -> tuple[int, int]:
    """The reversal seq range of the next close (``prev``: the previous close's row with its
    ``report_json`` and ``closed_at_ms``, None for the first): from the one after the
    previous close's ``rev_seq_to`` to the last reversal before the first one not yet
    announced (one being made — a gateway refund under way — belongs to the next close).
    A previous close made before reversals were wired in has no ``rev_seq_to``: it covered
    none, so the range starts after the reversals made before it closed (by time)."""
    if prev is None:
        start = 1
    else:
        last = json.loads(prev["report_json"]).get("rev_seq_to")
        if last is None:
            last = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM reversals WHERE occurred_at_ms <= ?",
                (prev["closed_at_ms"],),
            ).fetchone()[0]
        start = int(last) + 1
    end = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM reversals WHERE seq < "
        "coalesce((SELECT min(seq) FROM reversals WHERE announced = 0), ?)",
        (2**62,),
    ).fetchone()[0]
    return start, max(int(end), start - 1)


def kept_closes(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every close kept in a terminal database, oldest first: the report, when the server
    received it (None: not yet) and what it answered."""
    rows = conn.execute("SELECT report_json, sent_at_ms, server_json FROM day_closes ORDER BY number")
    return [
        {"report": json.loads(r[0]), "sent_at_ms": r[1], "server": json.loads(r[2]) if r[2] else None}
        for r in rows
    ]


def _summary(z: ZReport) -> dict[str, Any]:
    return {
        "sales_count": z.sales.count,
        "sales_fen": z.sales.amount_fen,
        "reversals_count": z.reversals.count,
        "reversals_fen": z.reversals.amount_fen,
        "net_fen": z.net_fen,
        "unsent": z.unsent,
    }
