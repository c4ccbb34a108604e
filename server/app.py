"""The Flask application factory (flaskr style).

Configuration: defaults → ``<instance>/config.py`` if present → ``CANTEEN_*`` environment
variables (``CANTEEN_DATABASE``, ``CANTEEN_BROKER_URL`` …) → ``test_config`` when given.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from server import api
from server.infra import db_flask, keys
from server.infra.db import open_db
from shared.clock import Clock


def default_home() -> str:
    return os.path.abspath(os.environ.get("CANTEEN_HOME", os.path.join(os.getcwd(), "var")))


def create_app(test_config: dict[str, Any] | None = None, clock: Clock | None = None) -> Flask:
    home = (test_config or {}).get("HOME") or default_home()
    instance = os.path.join(home, "server")
    app = Flask(__name__, instance_path=instance, instance_relative_config=True)
    app.config.from_mapping(
        DATABASE=os.path.join(instance, "canteen.sqlite"),
        SERVER_KEY_FILE=os.path.join(instance, "server_key.hex"),
        BROKER_URL="",
        YEAR_END_REFUND_TO="unit",
        # the broker's users and ACL, written by the server (server.registry.broker_users)
        MQTT_PASSWORD_FILE=os.path.join(instance, "mosquitto", "passwd"),
        MQTT_ACL_FILE=os.path.join(instance, "mosquitto", "canteen.acl"),
        MQTT_SERVER_PASSWORD_FILE=os.path.join(instance, "mqtt_server_password"),
        # digital RMB: "none" (refused) unless configured; "simulated" only for the demo and
        # tests, with a per-installation callback key made at init (ECNY_SIM_KEY_FILE, 0600)
        ECNY_GATEWAY="none",
        ECNY_SIM_KEY_FILE=os.path.join(instance, "ecny_simulated_key.hex"),
        JSON_AS_ASCII=False,
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("CANTEEN")
    else:
        app.config.from_mapping(test_config)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    os.makedirs(os.path.dirname(os.path.abspath(app.config["DATABASE"])), exist_ok=True)
    open_db(app.config["DATABASE"]).close()  # create / migrate once at start
    app.extensions["canteen_server_key"] = keys.load_or_create(app.config["SERVER_KEY_FILE"])
    db_flask.init_app(app, clock)

    api.register(app)
    return app
