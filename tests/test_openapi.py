"""The OpenAPI document matches the routes: none missing, none invented."""

from __future__ import annotations

from flask import Flask

from server.api.spec import build_openapi, undocumented


def test_every_api_route_is_documented(app) -> None:  # noqa: ANN001
    assert undocumented(app) == []


def test_openapi_json_lists_exactly_the_routes(client, app) -> None:  # noqa: ANN001
    spec = client.get("/openapi.json").get_json()
    served = {
        (rule.rule.replace("<", "{").replace(">", "}"), m.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for m in rule.methods - {"HEAD", "OPTIONS"}
    }
    import re

    served = {(re.sub(r"\{[a-z_]+:", "{", p), m) for p, m in served}
    listed = {(p, m) for p, ops in spec["paths"].items() for m in ops}
    assert listed == served


def test_a_route_without_doc_is_caught() -> None:
    app = Flask("probe")
    app.add_url_rule("/api/v1/secret", "secret", lambda: "x")
    assert undocumented(app) == ["['GET'] /api/v1/secret"]
    assert build_openapi(app)["paths"]["/api/v1/secret"]["get"]["summary"] == "(undocumented)"


def test_role_protected_routes_say_which_roles(client) -> None:  # noqa: ANN001
    op = client.get("/openapi.json").get_json()["paths"]["/api/v1/terminals"]["post"]
    assert op["x-roles"] == ["admin"]
