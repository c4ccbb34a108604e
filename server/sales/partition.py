"""Which ingest worker handles a terminal's sales when the broker has no shared subscriptions.

Several server processes split ingest either through an MQTT shared subscription
(``MQTT_INGEST_SHARE_GROUP``: the broker hands each message to one of them — Mosquitto 2) or,
on a broker without them (NATS 2.9 grants ``$share/...`` and delivers nothing), by
**partitioning terminals**: ``MQTT_INGEST_PARTITION = "i/n"`` makes a process worker ``i`` of
``n``; every worker receives every sale and reversal message and handles (verifies, applies,
acknowledges) only those of the terminals it owns, ignoring the others unacknowledged (their
owner acknowledges them). A terminal belongs to exactly one worker: :func:`owner`, a stable
hash (CRC-32 of the id, the same in every process and release — never Python's ``hash()``,
which is salted per process).

Partitioning spreads the verification and database work, not the network: each worker still
reads every message. All workers must be configured with the same ``n``; a worker that is down
leaves its terminals' sales in their outboxes (they sell offline meanwhile and resend) until it
is back or another process takes its slot ``i/n``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import DomainError
from shared.protocol import topics

_PARTITION = re.compile(r"^\s*(\d{1,4})\s*/\s*(\d{1,4})\s*$")
BROKER_KINDS = ("mosquitto", "nats", "embedded")


def owner(terminal_id: str, workers: int) -> int:
    """The worker (0 … workers-1) that handles ``terminal_id``'s sales and reversals."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    return zlib.crc32(terminal_id.encode("utf-8")) % workers


@dataclass(frozen=True)
class Partition:
    """This process's slot: worker ``index`` of ``workers``."""

    index: int
    workers: int

    def handles(self, topic: str) -> bool:
        """Whether this worker takes the message on ``topic``. Only sales and reversals are
        partitioned (status and update reports go to every process, as with a share group);
        a sales topic whose terminal id is unusable goes to worker 0, which refuses it once."""
        terminal_id = topics.terminal_of(topic)
        if terminal_id is None:
            return self.index == 0 or not _partitioned_kind(topic)
        if topic not in (topics.sales(terminal_id), topics.reversals(terminal_id)):
            return True
        return owner(terminal_id, self.workers) == self.index


def _partitioned_kind(topic: str) -> bool:
    return topic.endswith(("/up/sales", "/up/reversals"))


def parse_partition(text: str) -> Partition | None:
    """``"i/n"`` (worker i of n, 0 ≤ i < n) → :class:`Partition`; empty → None (no partitioning)."""
    if not text.strip():
        return None
    m = _PARTITION.match(text)
    if m is None or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise DomainError(
            "bad_ingest_config",
            f"MQTT_INGEST_PARTITION must be 'i/n' with 0 <= i < n, not {text!r}",
            zh=f"MQTT_INGEST_PARTITION 应为 i/n（0 ≤ i < n），而不是 {text!r}",
        )
    return Partition(int(m.group(1)), int(m.group(2)))


def broker_kind(config: Mapping[str, Any]) -> str:
    """The broker the server talks to: ``MQTT_BROKER_KIND`` when set ("mosquitto", "nats",
    "embedded"); else "nats" when a NATS authorization file is configured; else "mosquitto"."""
    kind = str(config.get("MQTT_BROKER_KIND") or "").strip().lower()
    if not kind:
        return "nats" if config.get("MQTT_NATS_AUTHORIZATION_FILE") else "mosquitto"
    if kind not in BROKER_KINDS:
        raise DomainError(
            "bad_ingest_config",
            f"MQTT_BROKER_KIND must be one of {', '.join(BROKER_KINDS)}, not {kind!r}",
            zh=f"MQTT_BROKER_KIND 应为 {'、'.join(BROKER_KINDS)} 之一，而不是 {kind!r}",
        )
    return kind


def ingest_split(config: Mapping[str, Any]) -> tuple[str, Partition | None]:
    """How this process takes its share of ingest: (share-group topic prefix, partition).

    Refused at start-up: a share group on NATS (it would subscribe and receive nothing —
    silently deaf), and a share group together with a partition (each message would reach one
    worker, which would drop the ones it does not own: those sales would wait for a resend)."""
    group = str(config.get("MQTT_INGEST_SHARE_GROUP") or "").strip()
    partition = parse_partition(str(config.get("MQTT_INGEST_PARTITION") or ""))
    if group and broker_kind(config) == "nats":
        raise DomainError(
            "share_group_unsupported",
            "MQTT_INGEST_SHARE_GROUP is set but the broker is NATS, which accepts $share/... "
            "subscriptions and delivers nothing to them; use MQTT_INGEST_PARTITION = 'i/n'",
            zh="NATS 不支持共享订阅（$share），请改用 MQTT_INGEST_PARTITION = 'i/n' 按终端分区",
        )
    if group and partition is not None:
        raise DomainError(
            "share_group_unsupported",
            "set MQTT_INGEST_SHARE_GROUP or MQTT_INGEST_PARTITION, not both",
            zh="MQTT_INGEST_SHARE_GROUP 与 MQTT_INGEST_PARTITION 只能设置其一",
        )
    return (f"$share/{group}/" if group else ""), partition
