"""The fleet view on the server (issue 15): what a status stores, how ``fleet`` and
``GET /api/v1/fleet`` show it with its alerts, and ``/metrics`` for Prometheus."""

from __future__ import annotations

import json

from click.testing import CliRunner

from server.cli import main as server_cli
from server.infra.auth import create_token
from server.infra.db import write_txn
from server.registry.fleet import report
from server.registry.fleet_rules import FleetLimits
from server.registry.terminals import record_status
from shared.clock import SystemClock
from shared.metrics import parse
from shared.protocol import Status
from tests.helpers import populated, terminal

MIN = 60_000


def _status(now: int, **kw: object) -> Status:
    fields = {
        "state": "online",
        "pending": 0,
        "delta_version": 3,
        "clock_ms": now,
        "watermark_ms": now,  # a full status always has one; a last will has none
        "clock_offset_ms": -2_000,  # the terminal's clock 2 s fast
        "software": "canteen-terminal/1",
        "disk_free_bytes": 5 * 1024**3,
        "disk_total_bytes": 16 * 1024**3,
        "journal_bytes": 12 * 1024**2,
    }
    fields.update(kw)
    return Status(**fields)  # type: ignore[arg-type]


def test_state_changes_are_dated_by_arrival_and_terminal_times_corrected(conn, clock) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())
    t = terminal(conn, "C01", clock.now_ms())
    now = clock.now_ms()  # 12:00, lunch
    with write_txn(conn):
        record_status(conn, t.terminal_id, _status(now - 10 * MIN), now - 10 * MIN, now - 10 * MIN)
        record_status(conn, t.terminal_id, _status(now - 5 * MIN), now - 5 * MIN, now - 5 * MIN)
        record_status(
            conn,
            t.terminal_id,
            _status(
                now - 4 * MIN, pending=2, oldest_unsent_ms=now - 70 * MIN, last_error="server_unreachable"
            ),
            now - 4 * MIN,
            now - 4 * MIN,
        )
        record_status(conn, t.terminal_id, Status(state="offline"), now - 3 * MIN, now - 3 * MIN)  # its will
    data = report(conn, now, FleetLimits(offline_after_ms=2 * MIN))
    [row] = [r for r in data["terminals"] if r["terminal_id"] == t.terminal_id]
    assert row["status"] == "offline" and row["since_ms"] == now - 3 * MIN
    assert row["last_seen_ms"] == now - 3 * MIN
    # the will says "offline" and nothing else: the last full status's facts are kept
    assert (
        row["unsent_sales"] == 2 and row["oldest_unsent_ms"] == now - 70 * MIN - 2_000
    )  # corrected to the server's clock
    assert row["last_error"] == "server_unreachable" and row["software"] == "canteen-terminal/1"
    codes = {a["code"] for a in data["alerts"] if a["terminal_id"] == t.terminal_id}
    assert codes == {"terminal_offline", "unsent_sales_old"}
    with write_txn(conn):  # back, still offline by its own account (catching up), with the sales sent
        record_status(conn, t.terminal_id, _status(now - MIN, state="offline"), now - MIN, now - MIN)
    data = report(conn, now, FleetLimits(offline_after_ms=2 * MIN))
    [row] = [r for r in data["terminals"] if r["terminal_id"] == t.terminal_id]
    assert row["since_ms"] == now - 3 * MIN  # still offline: since the first offline arrival
    assert row["unsent_sales"] == 0
    assert {a["code"] for a in data["alerts"] if a["terminal_id"] == t.terminal_id} == {"terminal_offline"}


def test_fleet_cli_and_api_show_the_same(app, conn, clock, client) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())
    t = terminal(conn, "C01", clock.now_ms())
    now = SystemClock().now_ms()  # the CLI judges "online" by the wall clock
    with write_txn(conn):
        record_status(conn, t.terminal_id, _status(now, clock_offset_ms=-10 * MIN), now, now)
        auditor = create_token(conn, "auditor", now)
        diner_holder = conn.execute("SELECT id FROM holders LIMIT 1").fetchone()[0]
        diner = create_token(conn, "diner", now, holder_id=diner_holder)
    served = client.get("/api/v1/fleet", headers={"Authorization": f"Bearer {auditor}"})
    assert served.status_code == 200
    alert = next(a for a in served.get_json()["alerts"] if a["terminal_id"] == t.terminal_id)
    assert alert["code"] == "clock_offset_high"
    assert client.get("/api/v1/fleet", headers={"Authorization": f"Bearer {diner}"}).status_code == 403
    out = CliRunner().invoke(server_cli, ["--home", app.config["HOME"], "fleet"])
    assert out.exit_code == 0, out.output
    assert f"{t.terminal_id} C01 在线 online" in out.stdout and "[clock_offset_high]" in out.stdout
    assert "终端时钟偏差过大" in out.stdout and "磁盘 free 5120MB" in out.stdout
    as_json = CliRunner().invoke(server_cli, ["--home", app.config["HOME"], "fleet", "--json"])
    assert {a["code"] for a in json.loads(as_json.stdout)["alerts"]} == {"clock_offset_high"}


def test_metrics_need_a_token_and_count_requests(conn, clock, client) -> None:  # noqa: ANN001
    with write_txn(conn):
        auditor = create_token(conn, "auditor", clock.now_ms())
    assert client.get("/metrics").status_code == 401
    client.get("/api/v1/health")
    got = client.get("/metrics", headers={"Authorization": f"Bearer {auditor}"})
    assert got.status_code == 200 and got.mimetype == "text/plain"
    text = got.get_data(as_text=True)
    samples = {
        s.name: s
        for f in parse(text)
        for s in f.samples
        if s.labels.get("route", "") in ("", "/api/v1/health")
    }
    assert samples["canteen_http_requests_total"].value == 1
    assert samples["canteen_terminals_online"].value == 0
