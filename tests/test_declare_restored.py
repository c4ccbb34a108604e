"""A database put back by other means than ``restore`` — a promoted asynchronous PostgreSQL
standby, a point-in-time recovery — lacks commits the terminals saw acknowledged.
``canteen-server declare-restored`` reads what it holds of each terminal from its own sales
and names a restore, so every terminal sends again what it lacks (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from server.books.ledger import ledger_sum
from server.cli.root import main
from server.closing.check import all_violations
from server.downstream import backup_marks
from server.downstream.deltas import current_version
from server.infra.db import open_db, write_txn
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock
from shared.protocol import Ack, open_envelope
from tests.helpers import populated, sale, signed_batch, terminal


def _send(worker: IngestWorker, creds, sales) -> list[str]:  # noqa: ANN001
    acks: list[bytes] = []
    worker._publish = lambda _t, payload, *_a: acks.append(payload) or True  # noqa: SLF001
    worker.process([(f"canteen/v1/t/{creds.terminal_id}/up/sales", signed_batch(creds, sales, 0))])
    env = open_envelope(acks[-1], secret_for=lambda _s: bytes.fromhex(creds.secret_hex))
    return [r.status for r in Ack.from_body(env.body).results]


def test_terminals_resend_what_a_promoted_standby_lacks_and_it_is_applied_once(
    conn, clock: FakeClock
) -> None:  # noqa: ANN001
    world = populated(conn, clock.now_ms())
    seller, idle = terminal(conn, "C01", clock.now_ms()), terminal(conn, "C01", clock.now_ms())
    card = world.diners[0].card_id
    journal = [sale(seller, s, card, 100, clock.now_ms()) for s in range(1, 31)]
    worker = IngestWorker(conn, clock, lambda *_: True)
    # the standby received the commits of seqs 1–20 and 25–30, not those of 21–24 (the
    # terminal's resends of a lost message committed after the later ones on the primary)
    _send(worker, seller, journal[:20])
    _send(worker, seller, journal[24:])
    version = current_version(conn)

    with write_txn(conn):
        epoch, held = backup_marks.declare_restore(conn, "promoted standby db2", clock.now_ms())
    assert held == {seller.terminal_id: 20}
    marks = {m.terminal_id: m for m in backup_marks.marks(conn)}
    assert (marks[seller.terminal_id].restore_epoch, marks[seller.terminal_id].restored_seq) == (epoch, 20)
    # a terminal with no sale in the database is told too: its acknowledged sales must come back
    assert (marks[idle.terminal_id].restore_epoch, marks[idle.terminal_id].restored_seq) == (epoch, 0)
    assert current_version(conn) == version + backup_marks.DELTA_JUMP  # terminals take a snapshot

    # the terminal requeues every journaled sale above 20: the four missing ones are
    # applied, the copies the database holds answer duplicate
    statuses = _send(worker, seller, journal[20:])
    assert statuses == ["applied"] * 4 + ["duplicate"] * 6
    count = conn.execute("SELECT count(*) FROM sales WHERE terminal_id = ?", (seller.terminal_id,)).fetchone()
    assert count[0] == 30
    assert ledger_sum(conn) == 0 and all_violations(conn) == []


def test_declare_restored_command_asks_first_and_records_the_reason(tmp_path: Path, clock: FakeClock) -> None:
    home = ["--home", str(tmp_path)]
    runner = CliRunner()
    assert runner.invoke(main, [*home, "init"]).exit_code == 0
    conn = open_db(tmp_path / "server" / "canteen.sqlite")
    world = populated(conn, clock.now_ms())
    creds = terminal(conn, "C01", clock.now_ms())
    _send(
        IngestWorker(conn, clock, lambda *_: True), creds, [sale(creds, 1, world.diners[0].card_id, 100, 0)]
    )

    declined = runner.invoke(main, [*home, "declare-restored", "--reason", "pitr"], input="n\n")
    assert declined.exit_code == 1 and conn.execute("SELECT count(*) FROM restores").fetchone()[0] == 0
    blank = runner.invoke(main, [*home, "declare-restored", "--reason", " ", "--yes"])
    assert blank.exit_code == 2 and "Traceback" not in blank.output

    done = runner.invoke(main, [*home, "declare-restored", "--reason", "promoted db2", "--yes", "--json"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    assert out["ok"] and out["held_through"] == {creds.terminal_id: 1} and out["ledger_sum_fen"] == 0
    row = conn.execute("SELECT epoch, backup_id FROM restores").fetchone()
    assert tuple(row) == (out["restore_epoch"], "declared: promoted db2")
    conn.close()
