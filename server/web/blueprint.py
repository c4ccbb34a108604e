"""One blueprint per page module, all made here so every page gets the same protections.

:func:`web_blueprint` gives a blueprint whose every POST (PUT, PATCH, DELETE) is checked for
the CSRF token (Flask-WTF's :class:`~flask_wtf.csrf.CSRFProtect`, which the whole console
shares: :data:`csrf`), and whose refusals and failures become the console's Chinese error
pages (:mod:`server.web.errors`) instead of the API's JSON. The API is untouched: it
authenticates with bearer tokens, never a cookie, so it needs no CSRF token.

To add pages: make a module with ``bp = web_blueprint("web_<area>", __name__)``, decorate
each view with :func:`~server.web.guard.page` (or ``public_page``), and list the module in
:data:`server.web.site.PAGE_MODULES`.
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException, InternalServerError

from server.web import errors
from shared.errors import DomainError

csrf = CSRFProtect()
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _check_csrf() -> None:
    if request.method in UNSAFE_METHODS:
        csrf.protect()  # raises CSRFError (a 400): the form_expired page


def _referrer_policy(response: Response) -> Response:
    # same-origin, not the API's no-referrer: over TLS, Flask-WTF also checks that a form was
    # posted from this site by its Referer; other sites still learn nothing of our addresses
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def web_blueprint(name: str, import_name: str, url_prefix: str | None = None) -> Blueprint:
    """A blueprint of console pages: templates from ``server/web/templates``, CSRF on every
    unsafe request, Chinese error pages."""
    bp = Blueprint(name, import_name, url_prefix=url_prefix, template_folder="templates")
    bp.before_request(_check_csrf)
    bp.after_request(_referrer_policy)
    bp.register_error_handler(DomainError, errors.domain_error)
    bp.register_error_handler(HTTPException, errors.http_error)
    bp.register_error_handler(InternalServerError, errors.server_error)
    return bp
