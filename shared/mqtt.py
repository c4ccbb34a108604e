"""The one module that imports paho-mqtt: a self-healing MQTT link.

:class:`MqttLink` owns one paho client and one network thread. It connects, renews its
subscriptions in ``on_connect`` (so a reconnect never leaves it deaf), reconnects with
exponential backoff and full jitter after any loss, sets a fresh last will before every
connect, and hands every incoming message to the caller's callback — which must only put
it on a queue; real work happens on the caller's own thread. Nothing here decides what is
durable: the terminal's outbox and the server's acknowledgements do.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

import paho.mqtt.client as paho

log = logging.getLogger(__name__)

Will = tuple[str, bytes, bool]  # topic, payload, retain


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """``mqtt://user:pass@host:1883`` or ``mqtts://host:8883`` (TLS)."""
        u = urlparse(url)
        if u.scheme not in ("mqtt", "mqtts", "tcp") or not u.hostname:
            raise ValueError(f"not an MQTT URL: {redacted_url(url)!r}")
        tls = u.scheme == "mqtts"
        return cls(u.hostname, u.port or (8883 if tls else 1883), u.username, u.password, tls)

    @classmethod
    def parse_list(cls, urls: str | Sequence[str]) -> list[BrokerAddress]:
        """The nodes of a clustered broker: a list of URLs or one comma-separated string
        (one URL alone is a list of one). At least one."""
        items = urls.split(",") if isinstance(urls, str) else list(urls)
        found = [cls.parse(u.strip()) for u in items if u.strip()]
        if not found:
            raise ValueError("no MQTT URL given")
        return found


class MqttLink:
    """A long-lived MQTT connection for one client id. Thread-safe ``publish``."""

    def __init__(
        self,
        client_id: str,
        address: BrokerAddress,
        *,
        subscriptions: list[tuple[str, int]] | None = None,
        on_message: Callable[[str, bytes], None] | None = None,
        will: Callable[[], Will] | None = None,
        on_state: Callable[[bool], None] | None = None,
        keepalive_s: int = 10,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 10.0,
        max_inflight: int = 200,
        rng: random.Random | None = None,
        credentials: Callable[[int], tuple[str, str]] | None = None,
        ca_file: str = "",
        alternates: Sequence[BrokerAddress] = (),
    ) -> None:
        """``credentials(refusals)``: the user and password for the next connect, asked
        before each one (a terminal whose key was just rotated tries the new password, and
        the old one after a refusal); without it, the address's own. ``alternates``: the
        other nodes of a clustered broker (their host and port; user, password and TLS are
        ``address``'s): after a failed connect or a lost session the link tries the next
        node, round the list."""
        self.client_id = client_id
        self.nodes = [address] + [
            BrokerAddress(a.host, a.port, address.username, address.password, address.tls) for a in alternates
        ]
        self._node = 0
        self.address = address  # the node in use (or tried last)
        self.subscriptions = list(subscriptions or [])
        self._on_message = on_message
        self._will = will
        self._on_state = on_state
        self.keepalive_s = keepalive_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._credentials = credentials
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connects = 0
        self.disconnects = 0
        self.refusals = 0  # connections or subscriptions the broker refused (bad credentials, ACL)
        self.connect_failures = 0  # connects that failed before MQTT (no route, refused, TLS)
        self.last_error = ""  # why the last connect failed ("" after a connect)

        c = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        c.max_inflight_messages_set(max_inflight)
        if address.username:
            c.username_pw_set(address.username, address.password)
        if address.tls:
            c.tls_set(ca_certs=ca_file or None)  # the system's CAs unless a deployment's own
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_message = self._handle_message
        c.on_subscribe = self._handle_subscribe
        self._sub_mid: int | None = None
        self._client = c

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> MqttLink:
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._connected.is_set():
            self._set_connected(False)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message; False when not connected (the caller keeps it and retries)."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == paho.MQTT_ERR_SUCCESS

    # --- network thread ------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [min, min(max, min * 2**attempt)]."""
        cap = min(self.backoff_max_s, self.backoff_min_s * (2 ** min(attempt, 16)))
        return self._rng.uniform(self.backoff_min_s, cap)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if self._will is not None:
                topic, payload, retain = self._will()
                self._client.will_set(topic, payload, qos=1, retain=retain)
            if self._credentials is not None:
                self._client.username_pw_set(*self._credentials(self.refusals))
            self.address = self.nodes[self._node]
            try:
                self._client.connect(self.address.host, self.address.port, self.keepalive_s)
            except OSError as exc:
                self._connect_failed(exc)
                self._next_node()
                self._stop.wait(self._backoff(attempt))
                attempt += 1
                continue
            # run the session until it breaks or we are asked to stop
            accepted = False
            while not self._stop.is_set():
                rc = self._client.loop(timeout=0.05)
                if rc != paho.MQTT_ERR_SUCCESS:
                    break
                if self._connected.is_set():
                    attempt, accepted = 0, True
            if self._stop.is_set():
                break
            if not accepted and not self.last_error:  # closed before the broker took us in
                self.connect_failures += 1
                self.last_error = f"connection closed before the broker accepted it ({paho.error_string(rc)})"
            self._set_connected(False)
            self._next_node()
            self._stop.wait(self._backoff(attempt))
            attempt += 1
        try:
            for _ in range(20):  # flush what was published just before stop (a last status)
                if not self._client.want_write():
                    break
                self._client.loop(timeout=0.05)
            self._client.disconnect()
            self._client.loop(timeout=0.05)
        except OSError as exc:  # socket already gone: nothing left to close politely
            log.debug("%s: disconnect: %s", self.client_id, exc)
        self._set_connected(False)

    def _connect_failed(self, exc: OSError) -> None:
        """A broker that is down is normal (debug); a certificate that does not verify is a
        deployment fault a person must fix (the CA file, the host name): a warning, once per
        distinct error."""
        error = f"{type(exc).__name__}: {exc}"
        self.connect_failures += 1
        if isinstance(exc, ssl.SSLError) and error != self.last_error:
            log.warning(
                "%s: TLS to %s:%d failed: %s", self.client_id, self.address.host, self.address.port, exc
            )
        else:
            log.debug("%s: connect to %s failed: %s", self.client_id, self.address.host, exc)
        self.last_error = error

    def _next_node(self) -> None:
        if len(self.nodes) > 1:
            self._node = (self._node + 1) % len(self.nodes)
            log.info("%s: trying broker node %s:%d next", self.client_id, *self._node_addr())

    def _node_addr(self) -> tuple[str, int]:
        node = self.nodes[self._node]
        return node.host, node.port

    def drop_connection(self) -> None:
        """Close the socket abruptly, as a lost network would (tests, simulator)."""
        sock = self._client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError as exc:
                log.debug("%s: drop: %s", self.client_id, exc)

    # --- paho callbacks (network thread): hand over, never work ---------------------------

    def _set_connected(self, value: bool) -> None:
        was = self._connected.is_set()
        if value:
            self._connected.set()
        else:
            self._connected.clear()
        if was != value:
            if value:
                self.connects += 1
            else:
                self.disconnects += 1
            if self._on_state is not None:
                self._on_state(value)

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            self.refusals += 1
            log.warning("%s: broker refused connection: %s", self.client_id, reason_code)
            client.disconnect()
            return
        self.last_error = ""
        if not self.subscriptions:
            self._set_connected(True)
            return
        # "connected" means subscribed: a reply that arrives before the SUBACK could be lost
        _, self._sub_mid = client.subscribe(self.subscriptions)

    def _handle_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        if mid != self._sub_mid:
            return
        if any(rc.is_failure for rc in reason_codes):
            self.refusals += 1
            log.error("%s: subscription refused: %s", self.client_id, reason_codes)
            client.disconnect()
            return
        self._set_connected(True)

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        self._set_connected(False)

    def _handle_message(self, client, userdata, message) -> None:  # noqa: ANN001
        if self._on_message is None:
            return
        try:
            self._on_message(message.topic, bytes(message.payload))
        except Exception:  # noqa: BLE001 — a consumer's bug must not kill the connection
            log.exception("%s: message handler failed on %s", self.client_id, message.topic)


def without_credentials(url: str) -> str:
    """``mqtt://server:secret@host:1883`` → ``mqtt://host:1883`` (each of a cluster's URLs): the
    address another client is given, which logs in with its own name and password."""
    if "," in url:
        return ",".join(without_credentials(part.strip()) for part in url.split(","))
    u = urlparse(url)
    return u._replace(netloc=u.netloc.rsplit("@", 1)[-1]).geturl()


def redacted_url(url: str) -> str:
    """``mqtt://user:secret@host:1883`` → ``mqtt://user:***@host:1883``: a broker URL fit to print
    (each of a cluster's comma-separated URLs)."""
    if "," in url:
        return ",".join(redacted_url(part) for part in url.split(","))
    u = urlparse(url)
    if u.password is None:
        return url
    host = u.netloc.rsplit("@", 1)[1]
    return u._replace(netloc=f"{u.username}:***@{host}").geturl()
