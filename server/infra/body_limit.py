"""How big a request may be, enforced before the body is read.

Two places refuse an oversized body, with the same JSON (code ``request_too_large``, the
text in Chinese and English):

* waitress, the WSGI server: ``max_request_body_size`` — a request whose ``Content-Length``
  is over the limit is answered from its headers alone, and a chunked one as soon as it
  passes the limit; the rest is never read. Without it waitress spools up to 1 GB first.
* Flask: ``MAX_CONTENT_LENGTH`` — for any other WSGI server and the test client; a view
  asking for the body of an oversized request gets the same 413 instead of the bytes.

The limit is the largest thing anyone sends: a face photo (10 MB) with its form overhead.
CSV imports keep their own, smaller limit (:data:`server.infra.csvinput.MAX_UPLOAD_BYTES`).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask
from werkzeug.exceptions import RequestEntityTooLarge

from shared.errors import message

MAX_REQUEST_BYTES = 11 * 1024 * 1024


def too_large_body(limit: int = MAX_REQUEST_BYTES) -> bytes:
    """The refusal, Chinese first with English beside it (no request to read a language from
    when waitress refuses)."""
    return json.dumps(
        {
            "code": "request_too_large",
            "message": message("request_too_large", "zh"),
            "message_en": message("request_too_large", "en"),
            "detail": f"request bodies up to {limit // (1024 * 1024)} MB",
        },
        ensure_ascii=False,
    ).encode()


def register(app: Flask) -> None:
    """Flask's limit and its 413 as JSON (a handler for the status code wins over the API's
    generic HTTP error handler)."""
    if not app.config.get("MAX_CONTENT_LENGTH"):  # Flask's default is None: no limit
        app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge) -> Response:
        limit = app.config["MAX_CONTENT_LENGTH"] or MAX_REQUEST_BYTES
        return Response(too_large_body(limit), status=413, mimetype="application/json")


class _JsonErrorTask(ErrorTask):
    """waitress's own refusal of an oversized body, as our JSON instead of its plain text."""

    def execute(self) -> None:
        if self.request.error.code != 413:
            super().execute()
            return
        body = too_large_body(self.channel.server.adj.max_request_body_size)
        self.status = "413 Request Entity Too Large"
        self.response_headers.append(("Content-Type", "application/json; charset=utf-8"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    error_task_class = _JsonErrorTask


def http_server(app: Flask, host: str, port: int, **kw: Any) -> Any:  # noqa: ANN401  # waitress's own types
    """A waitress server for ``app`` that refuses bodies over the app's limit unread."""
    limit = app.config.get("MAX_CONTENT_LENGTH") or MAX_REQUEST_BYTES
    server = create_server(app, host=host, port=port, max_request_body_size=limit, **kw)
    # one listening socket: the server itself; several: each registered in the server's map
    listeners = [server] if hasattr(server, "channel_class") else list(server.map.values())
    for listener in listeners:
        if hasattr(listener, "channel_class"):
            listener.channel_class = _Channel  # the channel it makes for each connection
    return server
