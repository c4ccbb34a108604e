"""How long the terminal keeps its sale journal, and sending sales again after a restore.

The journal is the terminal's own record of every sale; after the server acknowledges a
sale it stays there (the day's totals and the meal limit read it) and is the only copy
left should the server lose it. So a sale is deleted from the journal only when **both**

* the server has said, in its signed backup mark (:mod:`shared.protocol.backup_mark`),
  that the sale is in a backup it still keeps (``seq <= backed_up_seq``), and
* it is older than the terminal's own retention (``journal_keep_days``),

and never while it waits in the outbox, and never the newest sale (its number is where the
next one counts on from).

**After a restore** the mark names the restore (``restore_epoch``) and what the restored
database held of this terminal (``restored_seq``). The first time the terminal sees an
epoch, every sale it journaled above that goes back in the outbox, pending again, and is
sent again: the server applies what it lost, once, and answers ``duplicate`` for the rest.
So does every reversal it had applied (the mark names no reversal number; they are few).
``canteen-terminal resend --since SEQ`` does the same by hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.protocol.backup_mark import BackupMark
from shared.sqlite_txn import write_txn
from terminal import reversals
from terminal.store import Store

log = logging.getLogger(__name__)

PRUNE_CHUNK = 2000  # rows per delete transaction: a tap never waits long for the write lock


@dataclass(frozen=True)
class MarkOutcome:
    requeued: int
    pruned: int
    new_epoch: bool


def requeue_after(store: Store, after_seq: int) -> int:
    """Put every announced journal sale above ``after_seq`` that is not waiting in the
    outbox back into it, pending again; returns how many. They go out with the next batch."""
    with write_txn(store.conn):
        seqs = [
            r[0]
            for r in store.conn.execute(
                "SELECT seq FROM journal WHERE seq > ? AND announced = 1 "
                "AND seq NOT IN (SELECT seq FROM outbox) ORDER BY seq",
                (after_seq,),
            )
        ]
        store.conn.executemany(
            "UPDATE journal SET status = 'pending', reason = NULL WHERE seq = ?", [(s,) for s in seqs]
        )
        store.conn.executemany("INSERT INTO outbox(seq) VALUES (?)", [(s,) for s in seqs])
    return len(seqs)


def prune(store: Store, backed_up_seq: int, before_ms: int) -> int:
    """Delete acknowledged sales up to ``backed_up_seq`` dated before ``before_ms`` (none
    in the outbox, never the newest); returns how many."""
    total = 0
    while True:
        with write_txn(store.conn):
            cur = store.conn.execute(
                """
                DELETE FROM journal WHERE seq IN (
                    SELECT seq FROM journal
                    WHERE seq <= ? AND status <> 'pending' AND occurred_at_ms < ?
                      AND seq < (SELECT max(seq) FROM journal)
                      AND seq NOT IN (SELECT seq FROM outbox)
                    ORDER BY seq LIMIT ?)
                """,
                (backed_up_seq, before_ms, PRUNE_CHUNK),
            )
        total += cur.rowcount
        if cur.rowcount < PRUNE_CHUNK:
            return total


def on_mark(store: Store, mark: BackupMark, now_ms: int, keep_ms: int) -> MarkOutcome:
    """Act on the server's backup mark: resend after a restore first seen, then prune."""
    requeued = 0
    new_epoch = bool(mark.restore_epoch) and store.get_meta("restore_epoch") != mark.restore_epoch
    if new_epoch:
        requeued = requeue_after(store, mark.restored_seq) + reversals.requeue_applied(store)
        store.set_metas({"restore_epoch": mark.restore_epoch})
        log.warning(
            "%s: the server's database was restored (restore %s, it holds our sales up to %d): "
            "%d acknowledged sale(s) after that and the applied reversals queued to send again",
            mark.terminal_id,
            mark.restore_epoch,
            mark.restored_seq,
            requeued,
            extra={
                "terminal_id": mark.terminal_id,
                "restore_epoch": mark.restore_epoch,
                "requeued": requeued,
            },
        )
    store.set_metas({"backed_up_seq": str(mark.backed_up_seq), "backup_at_ms": str(mark.backup_at_ms)})
    pruned = prune(store, mark.backed_up_seq, now_ms - keep_ms) if mark.backed_up_seq else 0
    if pruned:
        log.info(
            "%s: pruned %d sale(s) from the journal (backed up to seq %d)",
            mark.terminal_id,
            pruned,
            mark.backed_up_seq,
            extra={"terminal_id": mark.terminal_id, "pruned": pruned, "backed_up_seq": mark.backed_up_seq},
        )
    return MarkOutcome(requeued, pruned, new_epoch)
