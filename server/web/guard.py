"""Who is signed in, and which pages they may open: the web's side of the role checks.

:func:`page` is the web's ``@requires``: it finds the signed-in account from the session,
turns it into the same :class:`~server.infra.auth.Principal` a bearer token gives, and admits
it with the API's own role check (:func:`server.infra.auth.admit`), which also makes it
``g.principal`` so the API's scope checks (:mod:`server.infra.scope`) work in page views
unchanged. A view takes the roles it serves, exactly like an API view::

    @bp.get("/people/<holder_id>")
    @page("admin", "auditor", "clerk")
    def person(holder_id): ...
        row = require_holder_access(get_db(), holder_id)   # a clerk of another unit: 403 page

:func:`public_page` marks a page anyone may open (the canteen directory). Every page of the
console is one or the other; ``tests/test_web_roles.py`` walks them all, role by role.

Not signed in (or the session ended after 30 idle minutes): the browser is sent to the log-in
page, and back to where it was after. An account whose password must be changed can open
nothing but the password page.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Response, current_app, flash, g, redirect, request, session, url_for

from server.infra.auth import admit
from server.infra.db_flask import get_clock, get_db
from server.web import sessions
from server.web.accounts import Account

F = TypeVar("F", bound=Callable[..., Any])
STAFF_ROLES = ("admin", "clerk", "operator", "auditor")
PASSWORD_ENDPOINT = "web_auth.change_password"


def current_account() -> Account | None:
    """The account signed in on this request (looked up once per request)."""
    if "web_account" in g:
        return g.web_account
    account = None
    sid = session.get("sid")
    if isinstance(sid, str) and sid:
        resumed = sessions.resume(get_db(), sid, get_clock().now_ms())
        account = resumed.account
        if account is None:
            session.pop("sid", None)
            g.web_session_expired = resumed.expired
    g.web_account = account
    return account


def sign_in(account: Account, sid: str) -> None:
    """Bind the browser to a new session (a fresh cookie: no session fixation)."""
    session.clear()
    session["sid"] = sid
    session.permanent = False
    g.web_account = account


def sign_out() -> str | None:
    """Forget the session in the browser; returns its id so the caller can end it."""
    sid = session.get("sid")
    session.clear()
    g.web_account = None
    return sid if isinstance(sid, str) else None


def safe_next(target: str | None) -> str | None:
    """A return address that stays on this site (a path), or None."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


# where each role lands after log-in (a page that role may open)
HOME = {
    "admin": "web_dashboard.dashboard",
    "auditor": "web_dashboard.dashboard",
    "clerk": "web_people.search",
    "operator": "web_operator.home",
    "diner": "web_diner.home",
}


def home_for(account: Account) -> str:
    """Where an account lands after log-in."""
    return url_for(HOME[account.role])


def to_login(*, expired: bool = False, diner: bool | None = None) -> Response:
    """Send the browser to the right log-in page and back here afterwards."""
    if expired or g.get("web_session_expired"):
        flash("登录已超时（30 分钟无操作），请重新登录。", "warning")
    if diner is None:
        diner = roles_of(current_app.view_functions.get(request.endpoint or "")) == ("diner",)
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    endpoint = "web_auth.diner_login" if diner else "web_auth.login"
    return redirect(url_for(endpoint, next=safe_next(target)))  # type: ignore[return-value]


def page(*roles: str) -> Callable[[F], F]:
    """Decorator: a page for signed-in accounts of ``roles`` (others get the 403 page)."""

    def wrap(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            account = current_account()
            if account is None:
                return to_login(diner=tuple(roles) == ("diner",))
            if account.must_change and request.endpoint != PASSWORD_ENDPOINT:
                flash("首次登录，请先设置新密码。", "info")
                return redirect(url_for(PASSWORD_ENDPOINT))
            admit(account.principal(), roles)
            return view(*args, **kwargs)

        inner._roles = roles  # type: ignore[attr-defined]  # read by the navigation and the role tests
        return inner  # type: ignore[return-value]

    return wrap


def public_page(view: F) -> F:
    """Decorator: anyone may open this page, signed in or not (so no page is public by accident:
    the role tests refuse a page that is neither :func:`page` nor this)."""
    view._public = True  # type: ignore[attr-defined]
    return view


def roles_of(view: Callable[..., Any] | None) -> tuple[str, ...] | None:
    """The roles a view serves; None for a public page (or no view)."""
    return getattr(view, "_roles", None)
