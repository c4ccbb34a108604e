"""Every console page × every role, walked from the app's own URL map (like the API's
tests/test_api_roles.py walks the OpenAPI document).

Each page is either ``@page(roles…)`` or ``@public_page`` — none is public by accident — and
for every role and for nobody:

* nobody on a role page → sent to a log-in page;
* a role the page does not serve → the 403 page (in Chinese);
* a role it serves → not refused, no server error (the sample ids are inside every scoped
  role's scope, so a scope refusal would be a bug too).

Pages added later are covered as soon as they exist; a new path parameter needs a sample in
``SAMPLE``. Then the scope itself: a clerk opening another unit's person gets the 403 page and
changes nothing; the auditor can change nothing at all; the menu offers each role only pages it
may open.
"""

from __future__ import annotations

import re

import pytest

from server.infra.db import write_txn
from server.registry import funds, leavers
from server.registry.terminals import provision
from server.web.guard import roles_of
from tests.helpers import populated
from tests.roles_support import fill_params
from tests.web_support import (
    DINER_HOLDER,
    DINER_STAFF_NO,
    STAFF,
    csrf_of,
    diner_login,
    login,
    make_diner,
    make_staff,
    text_of,
)

# H00001: in U01, the clerk's unit, the diner's own; C01: U01's canteen, run by the operator's
# company; 2025Q4 and 2025: ended, so their settlement and clearing pages show a preview
SAMPLE = {"holder_id": DINER_HOLDER, "canteen_id": "C01", "quarter": "2025Q4", "year": "2025"}
# the registry's pages (all in U01 or its canteen C01): H00001's card, the refund request of a
# leaver of U01 and a terminal, both made by the fixture
SAMPLE |= {"card_id": "C00001", "request_id": "1", "terminal_id": "T0001", "unit_id": "U01"}
SAMPLE |= {"canteen_id": "C01", "sku": "tissue"}
# the diner's pages: an unknown sale or order is a 404 page
SAMPLE |= {"sale_uuid": "no-such-sale", "order_no": "TU-NO-SUCH-ORDER"}
ROLES = [*STAFF, "diner"]
# a POST that changes only the caller's own log-in (or none): open to every role
SELF_SERVICE = {
    "web_auth.login",
    "web_auth.logout",
    "web_auth.change_password",
    "web_auth.diner_login",
    "web_auth.activate",
}


def web_rules(app):  # noqa: ANN001, ANN201
    return [
        r
        for r in sorted(app.url_map.iter_rules(), key=lambda r: r.rule)
        if r.endpoint.startswith("web_") and r.endpoint != "web_static.static"
    ]


def fill(rule: str) -> str:
    return fill_params(rule, r"<(?:[a-z]+:)?([a-zA-Z_]+)>", SAMPLE)


@pytest.fixture
def clients(app, conn, clock):  # noqa: ANN001, ANN201
    populated(conn, clock.now_ms())
    with write_txn(conn):  # a leaver of U01 whose refund waits (request 1), and a terminal
        funds.topup(conn, "C00004", 1_000, clock.now_ms(), ref="roles-leaver")
        leavers.leave(conn, "H00004", clock.now_ms())
        leavers.request_refund(conn, "H00004", clock.now_ms(), "test", bank_account="6217003320001234567")
        provision(conn, "C01", clock.now_ms(), "00" * 32, terminal_id="T0001")
    out = {}
    for role in STAFF:
        make_staff(conn, role, clock.now_ms())
    make_diner(conn, DINER_HOLDER, DINER_STAFF_NO, clock.now_ms())

    def signed_in(role: str | None):  # noqa: ANN202
        client = app.test_client()
        if role == "diner":
            assert diner_login(client).status_code == 302
        elif role:
            assert login(client, f"{role}1").status_code == 302
        return client

    for role in [*ROLES, None]:
        out[role] = signed_in(role)
    out["_new"] = signed_in
    return out


def test_every_console_page_is_either_for_roles_or_public(app) -> None:  # noqa: ANN001
    for rule in web_rules(app):
        view = app.view_functions[rule.endpoint]
        assert (roles_of(view) is not None) != bool(getattr(view, "_public", False)), rule.endpoint


def test_every_page_refuses_or_serves_every_role_as_its_roles_say(app, clients) -> None:  # noqa: ANN001
    problems = []
    for rule in web_rules(app):
        view = app.view_functions[rule.endpoint]
        roles = roles_of(view)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for role in [*ROLES, None]:
                # logging out would end the shared client's session: use a fresh one
                client = clients["_new"](role) if rule.endpoint == "web_auth.logout" else clients[role]
                url = fill(rule.rule)
                if method == "GET":
                    resp = client.get(url)
                else:
                    page = "/password" if role else "/login"
                    resp = client.post(url, data={"csrf_token": csrf_of(text_of(client.get(page)))})
                where = f"{method} {rule.rule} as {role or 'nobody'}"
                status, location = resp.status_code, resp.headers.get("Location", "")
                if status >= 500:
                    problems.append(f"{where}: server error {status}")
                elif roles is None:
                    if status in (401, 403):
                        problems.append(f"{where}: public page refused ({status})")
                elif role is None:
                    if not (status == 302 and "login" in location):
                        problems.append(f"{where}: expected the log-in page, got {status} {location}")
                elif role not in roles:
                    if not (status == 403 and "无权访问" in text_of(resp)):
                        problems.append(f"{where}: expected the 403 page, got {status}")
                elif status == 403 or (status == 302 and "login" in location):
                    problems.append(f"{where}: allowed role refused ({status} {location})")
    assert problems == []


def test_a_clerk_cannot_open_another_units_person_and_changes_nothing(clients, conn) -> None:  # noqa: ANN001
    clerk = clients["clerk"]  # of U01; H00002 is in U02
    page = clerk.get("/people/H00002")
    assert page.status_code == 403 and "无权访问" in text_of(page)
    token = csrf_of(text_of(clerk.get("/people")))
    assert clerk.post("/people/H00002/activation", data={"csrf_token": token}).status_code == 403
    assert conn.execute("SELECT count(*) FROM web_accounts WHERE holder_id = 'H00002'").fetchone()[0] == 0
    listed = text_of(clerk.get("/people?size=200"))
    assert "U01-0001" in listed and "U02-0002" not in listed  # the list shows their unit only
    assert "没有符合条件的记录" in text_of(clerk.get("/people?q=U02-0002"))  # nor does a search


def test_the_auditor_can_change_nothing(app, clients, conn) -> None:  # noqa: ANN001
    for rule in web_rules(app):
        if "POST" in rule.methods and rule.endpoint not in SELF_SERVICE:
            assert "auditor" not in (roles_of(app.view_functions[rule.endpoint]) or ()), rule.endpoint
    auditor = clients["auditor"]
    before = conn.execute("SELECT count(*) FROM web_accounts").fetchone()[0]
    token = csrf_of(text_of(auditor.get(f"/people/{DINER_HOLDER}")))
    assert "打印激活码" not in text_of(auditor.get(f"/people/{DINER_HOLDER}"))  # no button offered
    assert auditor.post(f"/people/{DINER_HOLDER}/activation", data={"csrf_token": token}).status_code == 403
    assert auditor.post("/dashboard/check", data={"csrf_token": token}).status_code == 403
    assert conn.execute("SELECT count(*) FROM web_accounts").fetchone()[0] == before


@pytest.mark.parametrize("role", ROLES)
def test_the_menu_offers_only_pages_the_role_may_open(clients, role: str) -> None:
    client = clients[role]
    home = client.get("/")
    page = client.get(home.headers["Location"])
    assert page.status_code == 200
    nav = text_of(page).split('aria-label="主导航"')[1].split("</nav>")[0]
    links = re.findall(r'href="([^"]+)"', nav)
    assert links
    for link in links:
        assert client.get(link).status_code == 200, (role, link)
