"""The terminal's journal: pruned only up to what the server says a kept backup holds (and
never a sale still unsent, nor the newest), and sent again after the server was restored."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from server.downstream.backup_marks import DELTA_JUMP
from shared.clock import FakeClock
from shared.protocol import Delta, ReversalResult, SaleResult, Snapshot
from shared.protocol.backup_mark import BackupMark
from terminal import journal_keep, reversals
from terminal.cli import main as terminal_main
from terminal.store import Store
from terminal.sync import SyncAgent
from tests.terminal_support import journal_sale, offline_config

DAY_MS = 86_400_000
T0 = 1_790_000_000_000


def _store(tmp_path: Path, sales: int, acked: int) -> Store:
    """``sales`` sales a day apart, the first ``acked`` of them acknowledged by the server."""
    store = Store(tmp_path / "t.sqlite")
    for k in range(sales):
        sale = journal_sale(
            store, 100, T0 + k * DAY_MS, canteen_id="C1", card_id="K1", kind="shop", announced=True
        )
        if k < acked:
            store.apply_results((SaleResult("T1", sale.seq, sale.uuid, "applied"),), "T1")
    return store


def _seqs(store: Store, table: str = "journal") -> list[int]:
    return [r[0] for r in store.conn.execute(f"SELECT seq FROM {table} ORDER BY seq")]


def test_nothing_is_pruned_without_a_backup_however_old(tmp_path: Path) -> None:
    store = _store(tmp_path, 10, 10)
    out = journal_keep.on_mark(store, BackupMark("T1"), T0 + 400 * DAY_MS, keep_ms=DAY_MS)
    assert out.pruned == 0 and _seqs(store) == list(range(1, 11))


def test_pruned_up_to_the_backed_up_seq_and_the_terminals_own_retention(tmp_path: Path) -> None:
    store = _store(tmp_path, 10, 10)
    now = T0 + 9 * DAY_MS  # sale k (seq k+1) is 9-k days old
    # the backup holds 1..7; the terminal keeps 4 days itself: 1..5 are 5+ days old
    out = journal_keep.on_mark(store, BackupMark("T1", backed_up_seq=7), now, keep_ms=4 * DAY_MS + 1)
    assert out.pruned == 5 and _seqs(store) == [6, 7, 8, 9, 10]
    # a later backup holding everything: all old enough go, but never the newest sale
    journal_keep.on_mark(store, BackupMark("T1", backed_up_seq=10), T0 + 100 * DAY_MS, keep_ms=DAY_MS)
    assert _seqs(store) == [10]
    # the next sale still counts on from it
    nxt = journal_sale(store, 100, T0 + 101 * DAY_MS, canteen_id="C1", card_id="K1", kind="shop")
    assert nxt.seq == 11


def test_a_sale_not_yet_acknowledged_is_never_pruned(tmp_path: Path) -> None:
    store = _store(tmp_path, 10, 6)  # 7..10 still in the outbox
    journal_keep.on_mark(store, BackupMark("T1", backed_up_seq=10), T0 + 100 * DAY_MS, keep_ms=DAY_MS)
    assert _seqs(store) == [7, 8, 9, 10] and _seqs(store, "outbox") == [7, 8, 9, 10]


def test_a_restore_puts_acknowledged_sales_after_it_back_in_the_outbox_once(tmp_path: Path) -> None:
    store = _store(tmp_path, 10, 8)  # 1..8 acknowledged, 9..10 unsent
    now = T0 + 10 * DAY_MS
    mark = BackupMark("T1", backed_up_seq=3, restore_epoch="e1", restored_seq=5)
    out = journal_keep.on_mark(store, mark, now, keep_ms=100 * DAY_MS)
    # the server lost 6..8 although it had acknowledged them: they go out again, pending
    assert out.requeued == 3 and out.new_epoch
    assert _seqs(store, "outbox") == [6, 7, 8, 9, 10]
    pending = [
        r[0] for r in store.conn.execute("SELECT seq FROM journal WHERE status = 'pending' ORDER BY seq")
    ]
    assert pending == [6, 7, 8, 9, 10]
    # the same mark again (a reconnect, the retained copy): nothing more
    store.apply_results(
        tuple(SaleResult("T1", s, _uuid(store, s), "applied") for s in (6, 7, 8)),
        "T1",
    )
    again = journal_keep.on_mark(store, mark, now, keep_ms=100 * DAY_MS)
    assert again.requeued == 0 and _seqs(store, "outbox") == [9, 10]
    # a second restore, from an older backup: sent again from there
    older = journal_keep.on_mark(store, BackupMark("T1", 3, 0, "e2", 2), now, keep_ms=100 * DAY_MS)
    assert older.requeued == 6 and _seqs(store, "outbox") == list(range(3, 11))


def test_resend_command_requeues_sales_after_seq(tmp_path: Path) -> None:
    store = _store(tmp_path, 6, 6)
    store.close()
    config = {
        "terminal_id": "T1",
        "canteen_id": "C1",
        "secret_hex": "00" * 32,
        "server_public_key": "00" * 32,
        "broker_url": "mqtt://127.0.0.1:1",
        "server_url": "http://127.0.0.1:1",
        "db_path": "t.sqlite",
    }
    (tmp_path / "t.json").write_text(json.dumps(config))
    r = CliRunner().invoke(terminal_main, ["resend", "--config", str(tmp_path / "t.json"), "--since", "4"])
    assert r.exit_code == 0, r.output
    assert "queued 2 sale(s)" in r.output
    store = Store(tmp_path / "t.sqlite")
    assert _seqs(store, "outbox") == [5, 6]
    store.close()


def _uuid(store: Store, seq: int) -> str:
    return store.conn.execute("SELECT uuid FROM journal WHERE seq = ?", (seq,)).fetchone()[0]


class _RestoredServerHttp:
    """The restored server's HTTP side as a terminal's catch-up sees it: the deltas it
    still has from before the backup, then the jump, then a snapshot at the jump."""

    def __init__(self, have: list[int], jump: int) -> None:
        self.deltas = [Delta(v) for v in have] + [Delta(jump)]
        self.jump = jump
        self.snapshots = 0

    def deltas_since(self, version: int, now_ms: int, faults: list) -> list[Delta]:  # noqa: ARG002
        return [d for d in self.deltas if d.version > version]

    def snapshot(self, now_ms: int, faults: list) -> Snapshot:  # noqa: ARG002
        self.snapshots += 1
        return Snapshot(self.jump, ())


def test_a_terminal_behind_the_backup_catches_up_across_the_jump_with_a_snapshot(tmp_path: Path) -> None:
    config = offline_config(tmp_path)
    agent = SyncAgent(config, FakeClock(T0))
    agent.store.apply_changes(90, ())  # the terminal had deltas up to 90; the backup had 100
    jump = 100 + DELTA_JUMP
    restored = _RestoredServerHttp(list(range(91, 101)), jump)
    agent.http = agent.downstream.http = restored  # type: ignore[assignment]  # the catch-up asks it
    agent._catch_up()  # noqa: SLF001 — the catch-up step itself, without a broker
    # 91..100 applied in order, then the gap inside the page sends it to the snapshot
    assert agent.store.delta_version == jump and agent.http.snapshots == 1  # type: ignore[attr-defined]
    assert not agent.downstream.need_catchup
    agent.store.close()


def test_a_restore_sends_again_the_reversals_the_server_had_applied(tmp_path: Path) -> None:
    store = _store(tmp_path, 10, 10)
    done = []
    for seq in (2, 3):
        sale = dict(store.conn.execute("SELECT * FROM journal WHERE seq = ?", (seq,)).fetchone())
        r = reversals.record(
            store,
            terminal_id="T1",
            canteen_id="C1",
            sale=sale,
            operator_card="OP1",
            occurred_at_ms=sale["occurred_at_ms"] + 60_000,
            offline=False,
        )
        reversals.mark_announced(store, r.seq)
        done.append(r)
    answers = (
        ReversalResult("T1", done[0].seq, done[0].uuid, "applied"),
        ReversalResult("T1", done[1].seq, done[1].uuid, "rejected", reason="reversal_window"),
    )
    reversals.apply_results(store, answers, "T1")
    assert reversals.pending_count(store) == 0
    # a restored server holds every sale (10) but its backup may predate the reversal of
    # sale 2, which the mark cannot say: the applied reversal is sent again, not the refused one
    mark = BackupMark("T1", restore_epoch="e1", restored_seq=10)
    out = journal_keep.on_mark(store, mark, T0 + 11 * DAY_MS, keep_ms=100 * DAY_MS)
    assert out.requeued == 1 and [s for s, _ in reversals.outbox_after(store, 0, 10)] == [done[0].seq]
    assert journal_keep.on_mark(store, mark, T0 + 11 * DAY_MS, keep_ms=100 * DAY_MS).requeued == 0
