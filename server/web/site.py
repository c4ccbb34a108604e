"""Wiring the web console into the Flask app: cookie, CSRF, templates, pages.

* **Session cookie** ``canteen_session``: Flask's signed cookie, holding only the random
  session id (:mod:`server.web.sessions`) and the CSRF token; ``HttpOnly``, ``SameSite=Lax``,
  and ``Secure`` whenever the request came over TLS (or ``WEB_COOKIE_SECURE`` says always —
  behind a proxy that ends TLS). It is signed with a per-installation key made at first start
  (``WEB_SECRET_KEY_FILE``, mode 0600).
* **CSRF**: Flask-WTF's ``CSRFProtect``, checked on every unsafe request to a console page
  (:mod:`server.web.blueprint`); every form carries the token.
* **Templates** ``server/web/templates/web/`` (a layout with navigation by role, macros for
  fields, tables and money), **static files** ``/static/…`` from ``server/web/static``; no
  CDN and no JavaScript needed for any action.
* **Navigation** (:data:`NAV`): an entry appears for the roles its page serves (read from the
  page's own ``@page(...)``), so the menu never offers a page that would answer 403.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, Flask, current_app, request
from flask.sessions import SecureCookieSessionInterface

from server.infra.keys import load_or_create_secret
from server.web import (
    auth_pages,
    canteens,
    cards,
    clerk,
    dashboard,
    diner,
    diner_card,
    diner_pay,
    diner_rate,
    diner_topup,
    directory,
    errors,
    fmt,
    leavers,
    money,
    operator,
    people,
    reports,
    roster_import,
    settle,
    terminals,
    units,
    updates,
    yearend,
)
from server.web.blueprint import csrf
from server.web.guard import current_account, roles_of
from server.web.tables import cell_html

PAGE_MODULES = (auth_pages, dashboard, directory, diner, people)
PAGE_MODULES += (money, settle, yearend, reports, clerk, operator)
PAGE_MODULES += (units, canteens, terminals, updates, roster_import, cards, leavers)
PAGE_MODULES += (diner_pay, diner_topup, diner_card, diner_rate)
# the menu: (endpoint, label); shown to the roles the endpoint's page serves
NAV: list[tuple[str, str]] = [
    ("web_dashboard.dashboard", "总览"),
    ("web_units.units", "单位"),
    ("web_canteens.canteens", "食堂"),
    ("web_terminals.fleet", "终端"),
    ("web_updates.rollout", "软件更新"),
    ("web_leavers.refunds", "离职退款"),
    ("web_people.search", "人员"),
    ("web_clerk.home", "本单位"),
    ("web_operator.home", "本食堂"),
    ("web_money.allocations", "经费"),
    ("web_settle.settlements", "结算"),
    ("web_reports.index", "报表"),
    ("web_diner.home", "我的账户"),
    ("web_directory.directory", "食堂名录"),
]

static = Blueprint(
    "web_static",
    __name__,
    static_folder=os.path.join(os.path.dirname(__file__), "static"),
    static_url_path="/static",
)


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, marked ``Secure`` when the request came over TLS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config.get("WEB_COOKIE_SECURE")) or bool(request and request.is_secure)


def nav_items() -> list[dict[str, Any]]:
    account = current_account()
    role = account.role if account else None
    items = []
    for endpoint, label in NAV:
        view = current_app.view_functions.get(endpoint)
        roles = roles_of(view)
        public = getattr(view, "_public", False)
        if view is not None and (public or (role is not None and roles is not None and role in roles)):
            items.append({"endpoint": endpoint, "label": label, "current": request.endpoint == endpoint})
    return items


def http_error(exc: Exception) -> Any:  # noqa: ANN401  # a page (text, status)
    """The console's error page for an address no page owns (the app routes here)."""
    return errors.http_error(exc)  # type: ignore[arg-type]


def register(app: Flask) -> None:
    app.config.setdefault("WEB_SECRET_KEY_FILE", os.path.join(app.instance_path, "web_secret.hex"))
    app.config.setdefault("WEB_COOKIE_SECURE", False)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = load_or_create_secret(app.config["WEB_SECRET_KEY_FILE"]).hex()
    app.config.update(
        SESSION_COOKIE_NAME="canteen_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_CHECK_DEFAULT=False,  # checked per console blueprint, never on the token-only API
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session (which idles out)
        WTF_I18N_ENABLED=False,  # WTForms' own zh messages, no Babel
    )
    app.session_interface = SessionInterface()
    csrf.init_app(app)
    app.jinja_env.filters.update(fmt.FILTERS)
    app.jinja_env.globals.update(nav_items=nav_items, current_account=current_account, table_cell=cell_html)
    app.register_blueprint(static)
    for module in PAGE_MODULES:
        app.register_blueprint(module.bp)
