"""Ingest split by terminal partition (``MQTT_INGEST_PARTITION = "i/n"``, issue 16): the
fallback for brokers without shared subscriptions (NATS 2.9). Each terminal belongs to
exactly one worker; a share group on NATS is refused at start-up; two server processes
partitioning one broker's sales apply and acknowledge every sale once."""

from __future__ import annotations

import threading
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from server.cli.root import main as server_main
from server.sales.partition import Partition, broker_kind, ingest_split, owner, parse_partition
from server.service import ServerService
from shared.broker import Broker, start_broker
from shared.clock import FakeClock, ms_from_china
from shared.errors import DomainError
from shared.mqtt import BrokerAddress, MqttLink
from shared.nats_broker import NatsBroker
from shared.protocol import topics
from simulator.harness.cluster import Cluster
from terminal.authorize import TapRequest

terminal_ids = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)


@given(terminal_ids, st.integers(min_value=1, max_value=64))
def test_every_terminal_is_handled_by_exactly_one_of_n_workers(terminal_id: str, n: int) -> None:
    workers = [Partition(i, n) for i in range(n)]
    for topic in (topics.sales(terminal_id), topics.reversals(terminal_id)):
        assert sum(w.handles(topic) for w in workers) == 1
    assert 0 <= owner(terminal_id, n) < n


@given(terminal_ids, st.integers(min_value=1, max_value=64))
def test_status_and_update_reports_reach_every_worker(terminal_id: str, n: int) -> None:
    for topic in (topics.status(terminal_id), topics.update_report(terminal_id)):
        assert all(Partition(i, n).handles(topic) for i in range(n))


def test_the_owner_is_a_stable_hash_not_the_per_process_one() -> None:
    # the same in every process and release: CRC-32 of the id (Python's hash() is salted)
    assert owner("T0001", 2) == zlib.crc32(b"T0001") % 2 == 0
    assert owner("T0004", 2) == 1


def test_a_sales_topic_with_an_unusable_terminal_id_goes_to_worker_0_only() -> None:
    topic = "canteen/v1/t/a*b/up/sales"
    assert [Partition(i, 3).handles(topic) for i in range(3)] == [True, False, False]


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "0/0", "1/2/3"])
def test_a_bad_partition_is_refused(text: str) -> None:
    with pytest.raises(DomainError) as err:
        parse_partition(text)
    assert err.value.code == "bad_ingest_config"


def test_partition_parsing() -> None:
    assert parse_partition("") is None
    assert parse_partition(" 1 / 3 ") == Partition(1, 3)


def test_broker_kind_from_the_setting_or_the_nats_authorization_file() -> None:
    assert broker_kind({}) == "mosquitto"
    assert broker_kind({"MQTT_NATS_AUTHORIZATION_FILE": "/etc/nats/auth.conf"}) == "nats"
    assert broker_kind({"MQTT_BROKER_KIND": "NATS"}) == "nats"
    with pytest.raises(DomainError):
        broker_kind({"MQTT_BROKER_KIND": "rabbitmq"})


def test_a_share_group_on_nats_is_refused_a_partition_is_not() -> None:
    nats = {"MQTT_BROKER_KIND": "nats"}
    with pytest.raises(DomainError) as err:
        ingest_split({**nats, "MQTT_INGEST_SHARE_GROUP": "ingest"})
    assert err.value.code == "share_group_unsupported"
    assert ingest_split({**nats, "MQTT_INGEST_PARTITION": "0/2"}) == ("", Partition(0, 2))
    assert ingest_split({"MQTT_INGEST_SHARE_GROUP": "ingest"}) == ("$share/ingest/", None)
    with pytest.raises(DomainError):  # both: each message to one worker, which may not own it
        ingest_split({"MQTT_INGEST_SHARE_GROUP": "ingest", "MQTT_INGEST_PARTITION": "0/2"})


def test_the_server_refuses_to_start_with_a_share_group_on_nats(tmp_path: Path) -> None:
    config = {"HOME": str(tmp_path), "MQTT_BROKER_KIND": "nats", "MQTT_INGEST_SHARE_GROUP": "ingest"}
    service = ServerService("mqtt://127.0.0.1:1", config=config)
    with pytest.raises(DomainError) as err:
        service.start()  # before it serves or connects anything
    assert err.value.code == "share_group_unsupported"
    assert service.link is None and service._http is None


def _broker(kind: str) -> Broker:
    if kind == "nats":
        if not NatsBroker.available():
            pytest.skip("needs nats-server (Debian package nats-server)")
        return NatsBroker().start()  # open (tests only): the harness's terminals enrol over HTTP
    return start_broker("auto")  # Mosquitto when installed, else the embedded broker


def test_canteen_server_run_refuses_a_share_group_on_nats_with_a_clear_message(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(server_main, ["--home", str(tmp_path), "init"]).exit_code == 0
    env = {"CANTEEN_MQTT_BROKER_KIND": "nats", "CANTEEN_MQTT_INGEST_SHARE_GROUP": "ingest"}
    args = ["--home", str(tmp_path), "run", "--broker", "mqtt://127.0.0.1:1", "--port", "0"]
    result = runner.invoke(server_main, args, env=env)
    assert result.exit_code == 2
    assert "（share_group_unsupported）" in result.stderr and "MQTT_INGEST_PARTITION" in result.stderr
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mosquitto_or_embedded", "nats"])
def test_two_partitioned_workers_apply_and_acknowledge_every_sale_once(tmp_path: Path, kind: str) -> None:
    """On NATS this is how several workers split ingest at all (``$share`` is deaf there)."""
    clock = FakeClock(ms_from_china("2026-11-26T11:45"))
    broker = _broker(kind)
    setting = {"MQTT_BROKER_KIND": broker.kind}
    acks: dict[str, int] = {}
    lock = threading.Lock()

    def on_ack(topic: str, payload: bytes) -> None:
        with lock:
            terminal = topics.terminal_of(topic) or "?"
            acks[terminal] = acks.get(terminal, 0) + 1

    listener = MqttLink(
        "test-acks", BrokerAddress.parse(broker.url), subscriptions=[(f"{topics.PREFIX}/t/+/down/ack", 1)],
        on_message=on_ack,
    ).start()  # fmt: skip
    try:
        assert listener.wait_connected(10)
        first = {"MQTT_INGEST_PARTITION": "0/2", **setting}
        with Cluster(tmp_path, broker=broker, clock=clock, server_config=first) as cluster:
            world = cluster.demo_world(30)
            second = ServerService(
                broker.url,
                config={"HOME": str(cluster.workdir), "MQTT_INGEST_PARTITION": "1/2", **setting},
                clock=clock,
            ).start()
            try:
                # T0001..T0003 hash to worker 0, T0004 to worker 1: both have terminals
                terms = [cluster.add_terminal("C01", batch_size=1, ack_timeout_s=60.0) for _ in range(4)]
                assert {owner(t.id, 2) for t in terms} == {0, 1}
                assert cluster.wait_synced(30)
                sold: dict[str, int] = {}
                for i, diner in enumerate(world.diners):
                    clock.advance_ms(20_000)
                    term = terms[i % len(terms)]
                    decision, _ = term.terminal.tap(TapRequest(diner.card_id))
                    assert decision.approved, decision.reason
                    sold[term.id] = sold.get(term.id, 0) + 1
                assert cluster.drain(60)
                workers = [cluster.server, second]
                stats = [w.ingest.stats for w in workers]  # type: ignore[union-attr]
                for n, s in enumerate(stats):  # each applied exactly its own terminals' sales
                    assert s.applied == sum(c for t, c in sold.items() if owner(t, 2) == n)
                    assert s.duplicates == 0 and s.rejected_messages == 0
                # each worker left the other's messages alone: every message reached both
                theirs = sold[terms[3].id]
                assert [w.not_mine for w in workers] == [theirs, sum(sold.values()) - theirs]
                audit = cluster.audit()
                assert audit.approved == audit.applied == len(world.diners)
                assert audit.pending == 0 and audit.ledger_sum_fen == 0 and audit.violations == []
                with lock:  # one acknowledgement per message (one sale each), from its owner only
                    assert acks == sold
            finally:
                second.stop()
    finally:
        listener.stop()
        broker.stop()
