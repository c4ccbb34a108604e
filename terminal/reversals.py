"""Reversals (冲正) at the terminal: their journal and outbox — the store access.

**Records.** A reversal is a record of its own (``reversals``), never an edit of the sale:
its own ``seq`` (per terminal, from 1) and uuid, the sale's ``seq`` and uuid, the operator
card, the time, the amount (the sale's). It is journaled with its outbox row in one durable
transaction (:func:`record`) *before* the display says 冲正成功, announced afterwards like a
sale (:func:`mark_announced`; an unannounced one is announced at the next start), and sent
from its own outbox (:func:`outbox_after`, ``terminal.sync``), settled by the server's
answers (:func:`apply_results`). A sale is reversed at most once (``sale_seq`` is unique).

**Balances.** A reversed sale no longer counts as this terminal's unconfirmed spending
(``terminal.store``); the money given back shows in the card's balance when the server's
balance (ack or delta) says so — never earlier, so an offline terminal never lets a card
spend money twice.

The operator's flow on the devices that makes them is :mod:`terminal.reversal_desk`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from shared.clock import start_of_china_day_ms
from shared.ids import uuid7_hex
from shared.protocol import Reversal, ReversalResult
from shared.protocol.messages import QUARANTINE_REASONS
from shared.sqlite_txn import write_txn
from terminal import reversal_flow as rf
from terminal.store import Store

log = logging.getLogger(__name__)

_MAX_SEQ = 2**62
# a sale that is still reversible: announced, not reversed, not refused by the server (one it
# holds for review may be reversed: that resolves the hold)
_REVERSIBLE = (
    "j.announced = 1 AND r.seq IS NULL "
    f"AND (j.status <> 'rejected' OR j.reason IN ({', '.join(repr(q) for q in sorted(QUARANTINE_REASONS))}))"
)


# --- the records ---------------------------------------------------------------------------


def reversible(
    store: Store, now_ms: int, window_ms_: int, limit: int = rf.SHOWN, card_id: str | None = None
) -> tuple[rf.Candidate, ...]:
    """This terminal's sales that may be reversed at ``now_ms``, newest first."""
    since = max(now_ms - window_ms_, start_of_china_day_ms(now_ms))
    sql = (
        "SELECT j.seq, j.amount_fen, j.occurred_at_ms, j.card_id, j.method, j.kind, j.meal_period "
        "FROM journal j LEFT JOIN reversals r ON r.sale_seq = j.seq "
        f"WHERE {_REVERSIBLE} AND j.occurred_at_ms >= ? AND j.occurred_at_ms <= ?"
    )
    args: list[Any] = [since, now_ms]
    if card_id is not None:
        sql += " AND j.card_id = ?"
        args.append(card_id)
    sql += " ORDER BY j.seq DESC LIMIT ?"
    args.append(limit)
    return tuple(rf.Candidate(*r) for r in store.conn.execute(sql, args))


def offline_today(store: Store, now_ms: int) -> tuple[int, int]:
    """(count, fen) of this terminal's offline reversals of purse-paid sales on ``now_ms``'s day."""
    day = start_of_china_day_ms(now_ms)
    n, fen = store.conn.execute(
        "SELECT count(*), coalesce(sum(amount_fen), 0) FROM reversals WHERE offline = 1 "
        "AND status <> 'rejected' AND method <> 'ecny' AND occurred_at_ms >= ? AND occurred_at_ms < ?",
        (day, day + 86_400_000),
    ).fetchone()
    return int(n), int(fen)


def record(
    store: Store,
    *,
    terminal_id: str,
    canteen_id: str,
    sale: dict[str, Any],
    operator_card: str,
    occurred_at_ms: int,
    offline: bool,
    refund_no: str | None = None,
) -> Reversal:
    """Journal the reversal of ``sale`` (its journal row) with its outbox row, in one durable
    transaction; not sent before :func:`mark_announced`."""
    with write_txn(store.conn):
        seq = int(store.conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM reversals").fetchone()[0])
        r = Reversal(
            terminal_id=terminal_id,
            seq=seq,
            uuid=uuid7_hex(occurred_at_ms),
            sale_seq=sale["seq"],
            sale_uuid=sale["uuid"],
            canteen_id=canteen_id,
            operator_card=operator_card,
            amount_fen=sale["amount_fen"],
            occurred_at_ms=occurred_at_ms,
            method=sale["method"],
            offline=offline,
            refund_no=refund_no,
        )
        r.validate()
        store.conn.execute(
            "INSERT INTO reversals(seq, uuid, sale_seq, card_id, holder_id, amount_fen, subsidy_fen, "
            "self_fen, method, operator_card, offline, occurred_at_ms, reversal_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                r.uuid,
                r.sale_seq,
                sale["card_id"],
                sale["holder_id"],
                r.amount_fen,
                sale["subsidy_fen"],
                sale["self_fen"],
                r.method,
                operator_card,
                int(offline),
                occurred_at_ms,
                json.dumps(r.to_dict(), ensure_ascii=False),
            ),
        )
        store.conn.execute("INSERT INTO reversal_outbox(seq) VALUES (?)", (seq,))
    return r


def forget_unannounced(store: Store, seq: int) -> None:
    """Drop a reversal that was journaled but never announced nor sent (its gateway refund
    failed): the operator was told it did not happen."""
    with write_txn(store.conn):
        store.conn.execute("DELETE FROM reversal_outbox WHERE seq = ?", (seq,))
        store.conn.execute("DELETE FROM reversals WHERE seq = ? AND announced = 0", (seq,))


def mark_announced(store: Store, seq: int) -> None:
    store.relaxed_write("UPDATE reversals SET announced = 1 WHERE seq = ?", (seq,))


def unannounced(store: Store) -> list[Reversal]:
    return [
        Reversal.from_dict(json.loads(r[0]))
        for r in store.conn.execute("SELECT reversal_json FROM reversals WHERE announced = 0 ORDER BY seq")
    ]


def outbox_after(store: Store, after_seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """Unacknowledged reversals after ``after_seq``, oldest first, up to the first one not yet
    announced."""
    return [
        (r[0], json.loads(r[1]))
        for r in store.conn.execute(
            "SELECT o.seq, r.reversal_json FROM reversal_outbox o JOIN reversals r ON r.seq = o.seq "
            "WHERE o.seq > ? AND o.seq < coalesce((SELECT min(seq) FROM reversals WHERE announced = 0), ?) "
            "ORDER BY o.seq LIMIT ?",
            (after_seq, _MAX_SEQ, limit),
        )
    ]


def requeue_applied(store: Store) -> int:
    """After a restore first seen (``terminal.journal_keep``): every reversal the server had
    applied goes back in the outbox, to be sent again — a restored database lacks those it
    applied after its backup, and the mark names no reversal number. The server answers
    ``duplicate`` for those it holds; refused ones stay refused. Returns how many."""
    with write_txn(store.conn):
        seqs = [
            r[0]
            for r in store.conn.execute(
                "SELECT seq FROM reversals WHERE status = 'applied' "
                "AND seq NOT IN (SELECT seq FROM reversal_outbox) ORDER BY seq"
            )
        ]
        store.conn.executemany("UPDATE reversals SET status = 'new' WHERE seq = ?", [(s,) for s in seqs])
        store.conn.executemany("INSERT INTO reversal_outbox(seq) VALUES (?)", [(s,) for s in seqs])
    return len(seqs)


def pending_count(store: Store) -> int:
    return int(store.conn.execute("SELECT count(*) FROM reversal_outbox").fetchone()[0])


def oldest_unsent_ms(store: Store) -> int | None:
    """The oldest reversal the server has not taken yet (a ``waiting`` one it has)."""
    return store.conn.execute(
        "SELECT min(r.occurred_at_ms) FROM reversal_outbox o JOIN reversals r ON r.seq = o.seq "
        "WHERE r.status = 'new'"
    ).fetchone()[0]


def apply_results(store: Store, results: tuple[ReversalResult, ...], terminal_id: str) -> dict[str, int]:
    """Settle answered reversals: a final answer leaves the outbox (``applied`` /
    ``rejected``); one the server keeps for its sale stays (``waiting``) and is sent again
    after a reconnect until it is final. Balances as with sales."""
    counts = {"applied": 0, "rejected": 0, "waiting": 0, "ignored": 0}
    with write_txn(store.conn):
        for r in results:
            row = store.conn.execute("SELECT uuid FROM reversals WHERE seq = ?", (r.seq,)).fetchone()
            if r.terminal_id != terminal_id or row is None or row[0] != r.uuid:
                counts["ignored"] += 1
                continue
            outcome = "waiting" if r.pending else "rejected" if r.rejected else "applied"
            store.conn.execute(
                "UPDATE reversals SET status = ?, reason = ? WHERE seq = ?",
                (outcome, None if r.pending else r.reason, r.seq),
            )
            if outcome != "waiting":
                store.conn.execute("DELETE FROM reversal_outbox WHERE seq = ?", (r.seq,))
            counts[outcome] += 1
            if r.holder_id and r.balance is not None:
                store.take_balance(r.holder_id, r.balance)
    return counts
