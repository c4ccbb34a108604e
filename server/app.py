"""The Flask application factory (flaskr style).

Configuration: defaults → ``<instance>/config.py`` if present → ``CANTEEN_*`` environment
variables (``CANTEEN_DATABASE``, ``CANTEEN_BROKER_URL`` …) → ``test_config`` when given.
``DATABASE_URL`` (``CANTEEN_DATABASE_URL``), when set, names a PostgreSQL database
(``postgresql://user@host:port/name``) that replaces the SQLite file ``DATABASE``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from server import api
from server.infra import access_log, body_limit, db_flask, headers, keys
from server.infra.db import connect, is_postgres, open_db, schema_version, shown
from server.infra.metrics import ServerMetrics
from server.registry.fleet import limits_from_config
from server.registry.fleet_metrics import FleetCollector
from server.web import site as web_site
from shared.clock import Clock, SystemClock
from shared.errors import DomainError


def default_home() -> str:
    return os.path.abspath(os.environ.get("CANTEEN_HOME", os.path.join(os.getcwd(), "var")))


CONFIG_TEMPLATE = """\
# canteen-server configuration (食堂一卡通 中心服务器配置).
# Read at start from $CANTEEN_HOME/server/config.py; a CANTEEN_<NAME> environment
# variable overrides a setting here (CANTEEN_BROKER_URL=mqtt://… for BROKER_URL).
# Every setting is shown with its default, commented out: uncomment to change it.

# The database (SQLite) and the server's signing key (their folder must exist):
# DATABASE = "{instance}/canteen.sqlite"
# Or PostgreSQL instead of the SQLite file (docs/scaling.md: when, and how to move):
# DATABASE_URL = "postgresql://canteen@db.example:5432/canteen"
# SERVER_KEY_FILE = "{instance}/server_key.hex"

# The MQTT broker `canteen-server run` connects to (its --broker option wins);
# empty: run an embedded broker on port 1883 (a laptop, not production).
# BROKER_URL = ""
# With mqtts://, the broker's certificate is checked against the system's CAs, or against
# this file (a deployment's own CA, PEM):
# MQTT_CA_FILE = ""

# Where unspent subsidy goes at the year-end clearing (close-year): "unit" (back to the
# cardholder's unit) or "city_finance" (市财政). `close-year --refund-to` wins.
# YEAR_END_REFUND_TO = "unit"

# The digital RMB (数字人民币) gateway adapter: "simulated", "none", or a real adapter
# registered in shared.ecny_gateway.GATEWAYS.
# ECNY_GATEWAY = "simulated"

# Run after the server rewrites the broker's users and ACL (revoke-terminal, enrolment,
# key rotation), so they hold at once; empty: SIGHUP to the Mosquitto whose pid is in
# MQTT_PID_FILE (written by a configuration from `mosquitto-config`), else reload by hand.
# MQTT_RELOAD_COMMAND = "systemctl reload mosquitto"
# MQTT_PID_FILE = "{home}/mosquitto/mosquitto.pid"

# Several server processes sharing ingest (docs/scaling.md): on Mosquitto a shared
# subscription group; on NATS (no shared subscriptions) this process's partition "i/n" of
# the terminals. The broker's kind: "mosquitto", "nats", "embedded"; empty: "nats" when
# MQTT_NATS_AUTHORIZATION_FILE is set. A share group on NATS is refused at start-up.
# MQTT_INGEST_SHARE_GROUP = ""
# MQTT_INGEST_PARTITION = ""
# MQTT_BROKER_KIND = ""

# The presence heartbeat says the newest delta version, so terminals that take deltas at
# QoS 0 (their mqtt_light_deltas) find a lost last delta. Turn on only once every terminal
# runs a version that reads it: an older one refuses such a presence (docs/scaling.md).
# PRESENCE_DELTA_VERSION = False

# Fleet health alerts (canteen-server fleet, GET /api/v1/fleet): a terminal offline longer
# than this during its canteen's meal hours; a heartbeat older than FLEET_STALE_S counts
# as offline; terminals reporting a software version below FLEET_MIN_SOFTWARE.
# FLEET_OFFLINE_ALERT_S = 600
# FLEET_STALE_S = 60
# FLEET_MIN_SOFTWARE = ""

# The language of API error messages: "zh" or "en" (both texts are always in the body).
# LANGUAGE = "zh"

# The server as phones and browsers reach it, for the links it hands out (qr-issue);
# no default: `canteen-server init --public-url https://…` sets it below.
# PUBLIC_URL = ""

# How often (seconds) the running server looks for a backup taken by another process
# (`canteen-server backup`, the systemd timer) to tell terminals how far they may prune
# their journals.
# BACKUP_MARK_POLL_S = 10

# Proxies in front of the server (a TLS front, a load balancer): their X-Forwarded-For,
# -Proto and -Host are trusted this many hops deep, so log lines, rate limits and log-in
# lockouts see each caller's own address. 0: those headers are ignored.
# PROXY_HOPS = 0
"""


def write_config_template(home: str) -> str | None:
    """Write the commented ``config.py`` into ``home``'s server folder unless one exists;
    return its path when written."""
    instance = os.path.join(os.path.abspath(home), "server")
    path = os.path.join(instance, "config.py")
    if os.path.exists(path):
        return None
    os.makedirs(instance, exist_ok=True)
    with open(path, "x", encoding="utf-8") as f:
        f.write(CONFIG_TEMPLATE.format(instance=instance, home=os.path.abspath(home)))
    return path


def create_app(
    test_config: dict[str, Any] | None = None,
    clock: Clock | None = None,
    *,
    home: str | None = None,
    require_database: bool = False,
) -> Flask:
    """The app for the data folder ``home`` (default: ``test_config["HOME"]``, else
    ``$CANTEEN_HOME``, else ``./var``). With ``require_database`` a folder without its
    database is refused (``no_database``) instead of getting a fresh empty one."""
    home = home or (test_config or {}).get("HOME") or default_home()
    instance = os.path.join(home, "server")
    # no static folder of its own: the web console serves /static/ (server.web.site)
    app = Flask(__name__, instance_path=instance, instance_relative_config=True, static_folder=None)
    app.config.from_mapping(
        HOME=home,
        DATABASE=os.path.join(instance, "canteen.sqlite"),
        DATABASE_URL="",  # postgresql://… : PostgreSQL instead of the SQLite file above
        SERVER_KEY_FILE=os.path.join(instance, "server_key.hex"),
        BROKER_URL="",
        MQTT_CA_FILE="",  # mqtts://: the broker's CA (PEM); empty: the system's CAs
        YEAR_END_REFUND_TO="unit",
        LANGUAGE="zh",  # of API error messages (zh | en; both texts are always in the body)
        # how many proxies (TLS front, load balancer) stand before the server: their
        # X-Forwarded-For/-Proto/-Host are trusted that many hops deep; 0: ignored (a caller
        # could write them itself)
        PROXY_HOPS=0,
        PUBLIC_URL="",  # the server as phones and browsers reach it (qr-issue links)
        # the broker's users and ACL, written by the server (server.registry.broker_users)
        MQTT_PASSWORD_FILE=os.path.join(instance, "mosquitto", "passwd"),
        MQTT_ACL_FILE=os.path.join(instance, "mosquitto", "canteen.acl"),
        MQTT_SERVER_PASSWORD_FILE=os.path.join(instance, "mqtt_server_password"),
        # run after the server rewrites them (revocation, enrolment, key rotation): e.g.
        # "systemctl reload mosquitto"; empty: a person reloads (kill -HUP <mosquitto pid>)
        MQTT_RELOAD_COMMAND="",
        # else SIGHUP to the Mosquitto whose pid is here (mosquitto-config renders pid_file
        # into its data folder, by default <home>/mosquitto)
        MQTT_PID_FILE=os.path.join(home, "mosquitto", "mosquitto.pid"),
        # NATS as the broker (issue 16): the authorization file nats-config wrote, rewritten
        # with the Mosquitto files; set MQTT_PID_FILE to <home>/nats/nats.pid. Empty: no NATS
        MQTT_NATS_AUTHORIZATION_FILE="",
        # several server processes splitting ingest: an MQTT shared-subscription group for
        # the sales and reversals (Mosquitto 2 only; empty: every process gets every sale)
        MQTT_INGEST_SHARE_GROUP="",
        # on a broker without shared subscriptions (NATS): "i/n" makes this process worker i
        # of n, handling only the sales of terminals whose id hashes to i (server.sales.partition)
        MQTT_INGEST_PARTITION="",
        # "mosquitto" | "nats" | "embedded"; empty: "nats" if MQTT_NATS_AUTHORIZATION_FILE is
        # set, else "mosquitto". A share group on NATS is refused at start-up
        MQTT_BROKER_KIND="",
        # fleet health (server.registry.fleet): alert thresholds; empty version: no check
        FLEET_OFFLINE_ALERT_S=600,
        FLEET_STALE_S=60,
        FLEET_MIN_SOFTWARE="",
        # digital RMB: "none" (refused) unless configured; "simulated" only for the demo and
        # tests, with a per-installation callback key made at init (ECNY_SIM_KEY_FILE, 0600)
        ECNY_GATEWAY="none",
        ECNY_SIM_KEY_FILE=os.path.join(instance, "ecny_simulated_key.hex"),
        # signed updates (server.registry.updates): the bundles the server serves, and the
        # release key's public half that every bundle is checked against before it is offered
        UPDATES_DIR=os.path.join(instance, "updates"),
        RELEASE_PUBLIC_KEY_FILE=os.path.join(instance, "release_public_key.hex"),
        JSON_AS_ASCII=False,
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("CANTEEN")
    else:
        app.config.from_mapping(test_config)
    app.config["HOME"] = home
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    if app.config.get("DATABASE_URL"):
        app.config["DATABASE"] = str(app.config["DATABASE_URL"])
    _check_database(app.config["DATABASE"], require_database)
    os.makedirs(instance, exist_ok=True)  # the server key and config.py live there
    open_db(app.config["DATABASE"]).close()  # create / migrate once at start
    app.extensions["canteen_server_key"] = keys.load_or_create(app.config["SERVER_KEY_FILE"])
    app.extensions["canteen_metrics"] = metrics = ServerMetrics()  # /metrics (Prometheus)
    metrics.register(
        FleetCollector(
            app.config["DATABASE"], limits_from_config(app.config), (clock or SystemClock()).now_ms
        )
    )
    db_flask.init_app(app, clock)

    api.register(app)
    web_site.register(app)  # the web console: pages, log-in, sessions, CSRF (issue 14)

    @app.errorhandler(404)
    @app.errorhandler(405)
    def no_such_address(exc: HTTPException):  # noqa: ANN202
        """An address no view owns: the API's JSON for a machine, the console's page for a person."""
        machine = request.path.startswith("/api/") or request.path == "/openapi.json"
        return api.http_error(exc) if machine else web_site.http_error(exc)

    access_log.init_app(app)  # one line per request on the canteen.http logger
    body_limit.register(app)  # refuse oversized bodies unread, as JSON 413
    headers.register(app)  # security headers on every response
    hops = int(app.config.get("PROXY_HOPS") or 0)
    if hops:  # behind TLS proxies: the caller's address and scheme from their X-Forwarded-* headers
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    return app


def _check_database(target: str, require_database: bool) -> None:
    """A SQLite file's folder is made; with ``require_database`` a missing file, or a
    PostgreSQL database without the schema, is refused (``no_database``)."""
    if is_postgres(target):
        if not require_database:
            return
        conn = connect(target)
        try:
            version = schema_version(conn)
        finally:
            conn.close()
        if version == 0:
            where = shown(target)
            raise DomainError(
                "no_database", f"{where} has no canteen schema", zh=f"{where} 尚未初始化", database=where
            )
        return
    if target.startswith("file:"):  # a SQLite URI (the simulator's in-memory database): no folder
        return
    database = os.path.abspath(target)
    if require_database and not os.path.exists(database):
        raise DomainError(
            "no_database", f"{database} does not exist", zh=f"{database} 不存在", database=database
        )
    os.makedirs(os.path.dirname(database), exist_ok=True)
