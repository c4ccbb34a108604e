"""The digital RMB (数字人民币) gateway of the running app, for the API and the web console.

:func:`gateway` is the configured adapter (``ECNY_GATEWAY``: default ``none``, refused with
``ecny_not_configured``), or one put in ``app.extensions['ecny_gateway']`` by whoever built
the app (tests, the simulator). ``simulated`` must be chosen explicitly; its callbacks are
signed with this installation's own key (``ECNY_SIM_KEY_FILE``, made at init).
"""

from __future__ import annotations

from flask import current_app

from server.infra.db_flask import get_clock
from server.infra.keys import load_or_create_secret
from shared.ecny_gateway import EcnyGateway, SimulatedGateway, make_gateway
from shared.errors import DomainError


def gateway() -> EcnyGateway:
    gw = current_app.extensions.get("ecny_gateway")
    if gw is None:
        name = str(current_app.config.get("ECNY_GATEWAY") or "none")
        if name == "simulated":
            key = load_or_create_secret(current_app.config["ECNY_SIM_KEY_FILE"])
            gw = SimulatedGateway(get_clock(), merchant_key=key)
        else:
            try:
                gw = make_gateway(name, get_clock())
            except ValueError as exc:
                raise DomainError("ecny_not_configured", str(exc)) from exc
        if gw is None:
            raise DomainError("ecny_not_configured", "set ECNY_GATEWAY (CANTEEN_ECNY_GATEWAY) to a gateway")
        current_app.extensions["ecny_gateway"] = gw
    return gw
