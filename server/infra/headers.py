"""Security headers on every response, set in one place.

* ``X-Content-Type-Options: nosniff`` — a browser never guesses a JSON or CSV body is HTML;
* ``Referrer-Policy: no-referrer`` — the QR page's link is a credential and must not leak
  to another site in a ``Referer``;
* ``X-Frame-Options: DENY`` and CSP ``frame-ancestors 'none'`` — no page of ours inside
  another site's frame;
* ``Content-Security-Policy``: JSON and files get ``default-src 'none'``; HTML pages get
  ``default-src 'self'`` with no inline script. A view that needs more (the QR page's
  inline ``<style>`` with a nonce) sets its own policy, which is kept as it is.
"""

from __future__ import annotations

from flask import Flask, Response

HTML_CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
DATA_CSP = "default-src 'none'; frame-ancestors 'none'"
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def page_csp(style_nonce: str) -> str:
    """The policy of an HTML page with one inline ``<style nonce=…>`` (and no script at all)."""
    return f"default-src 'none'; style-src 'nonce-{style_nonce}'; img-src 'self' data:; " + (
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def secure(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    html = response.mimetype == "text/html"
    response.headers.setdefault("Content-Security-Policy", HTML_CSP if html else DATA_CSP)
    return response


def register(app: Flask) -> None:
    app.after_request(secure)
