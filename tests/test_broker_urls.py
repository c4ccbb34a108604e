"""A clustered broker's nodes in one setting (issue 16): ``broker_url`` may list them; one URL
still works. The failover itself runs against real NATS nodes in tests/test_nats_cluster.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import DomainError
from shared.mqtt import BrokerAddress, MqttLink, redacted_url
from terminal.config import TerminalConfig


def test_broker_url_may_list_a_clusters_nodes_and_one_url_still_works(tmp_path: Path) -> None:
    one = BrokerAddress.parse_list("mqtt://a:1883")
    assert [(a.host, a.port) for a in one] == [("a", 1883)]
    many = BrokerAddress.parse_list("mqtt://a:1, mqtt://b:2,")
    assert [(a.host, a.port) for a in many] == [("a", 1), ("b", 2)]
    assert BrokerAddress.parse_list(["mqtt://a:1", "mqtts://b"])[1].tls
    with pytest.raises(ValueError):
        BrokerAddress.parse_list(" , ")
    base = {
        "terminal_id": "T1", "canteen_id": "C01", "secret_hex": "00" * 32, "server_public_key": "00" * 32,
        "server_url": "http://s",
    }  # fmt: skip
    path = tmp_path / "terminal.json"
    path.write_text(json.dumps({**base, "broker_url": ["mqtt://a:1", "mqtt://b:2"]}))
    assert TerminalConfig.load(path).broker_url == "mqtt://a:1,mqtt://b:2"
    path.write_text(json.dumps({**base, "broker_url": [1, 2]}))
    with pytest.raises(DomainError):
        TerminalConfig.load(path)  # not URLs: refused, not half-read


def test_a_link_given_alternates_uses_the_first_nodes_credentials_everywhere() -> None:
    first = BrokerAddress("a", 1, "T1", "pw", tls=False)
    link = MqttLink("T1", first, alternates=BrokerAddress.parse_list("mqtt://b:2,mqtt://c:3"))
    assert [(n.host, n.port, n.username, n.password) for n in link.nodes] == [
        ("a", 1, "T1", "pw"), ("b", 2, "T1", "pw"), ("c", 3, "T1", "pw"),
    ]  # fmt: skip


def test_every_node_of_a_printed_broker_list_is_redacted() -> None:
    shown = redacted_url("mqtt://server:s3cret@a:1,mqtt://server:s3cret@b:2")
    assert "s3cret" not in shown and shown == "mqtt://server:***@a:1,mqtt://server:***@b:2"
