"""Every error the API returns is JSON with a stable code — including a server fault."""

from __future__ import annotations

from werkzeug.exceptions import InternalServerError


def test_an_unexpected_server_fault_has_its_own_code_not_invalid_input(app) -> None:  # noqa: ANN001
    def boom() -> None:
        raise InternalServerError()

    app.add_url_rule("/probe-500", "probe_500", boom)
    resp = app.test_client().get("/probe-500")
    assert resp.status_code == 500
    assert resp.get_json()["code"] == "internal_error"


def test_an_unknown_route_is_not_found(client) -> None:  # noqa: ANN001
    resp = client.get("/api/v1/no-such-thing")
    assert (resp.status_code, resp.get_json()["code"]) == (404, "not_found")
