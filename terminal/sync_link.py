"""The sync agent's outside world: what it needs of its MQTT link, how the real link, HTTP
exchange, clock and boot id are swapped for the simulator's (:class:`Transport`), and this
terminal's own topics (:class:`OwnTopics`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from shared.protocol import topics
from terminal.server_http import Send


class Link(Protocol):
    """What the agent needs of its MQTT link (:class:`shared.mqtt.MqttLink`)."""

    @property
    def connected(self) -> bool: ...

    def start(self) -> object: ...

    def stop(self) -> None: ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool: ...


class LinkFactory(Protocol):
    def __call__(
        self,
        client_id: str,
        subscriptions: list[tuple[str, int]],
        *,
        on_message: Callable[[str, bytes], None],
        on_state: Callable[[bool], None],
        will: Callable[[], tuple[str, bytes, bool]],
    ) -> Link: ...


@dataclass(frozen=True)
class Transport:
    """The agent's outside world, each None for the real one: the MQTT link (made from the
    agent's subscriptions and callbacks), the HTTP exchange (:data:`terminal.server_http.Send`),
    the monotonic clock in seconds, and the machine's boot id. The deterministic simulator
    (``simulator.vopr``) hands in its network, its clock and a boot id per simulated power cycle."""

    link: LinkFactory | None = None
    http_send: Send | None = None
    monotonic: Callable[[], float] | None = None
    boot_id: str | None = None


@dataclass(frozen=True)
class OwnTopics:
    """This terminal's own topics, formatted (and their terminal id checked) once: every
    message the agent receives is told apart by them, every batch and status sent on one."""

    ack: str
    status: str
    update_offer: str
    backup: str
    rekey: str
    sales: str
    reversals: str
    update_report: str

    @classmethod
    def of(cls, terminal_id: str) -> OwnTopics:
        return cls(
            ack=topics.ack(terminal_id),
            status=topics.status(terminal_id),
            update_offer=topics.update_offer(terminal_id),
            backup=topics.backup(terminal_id),
            rekey=topics.rekey(terminal_id),
            sales=topics.sales(terminal_id),
            reversals=topics.reversals(terminal_id),
            update_report=topics.update_report(terminal_id),
        )
