"""The web console's log-in: passwords, lock-out, first-log-in change, idle sessions, CSRF,
cookies, diner activation, error pages (through the Flask test client; the same journeys
run in a real browser in tests/test_web_browser.py)."""

from __future__ import annotations

import logging

import pytest

from server.infra.db import write_txn
from server.web import accounts
from server.web.sessions import IDLE_MS
from tests.helpers import populated
from tests.web_support import (
    DINER_HOLDER,
    DINER_STAFF_NO,
    NEW_PASSWORD,
    PASSWORD,
    csrf_of,
    diner_login,
    login,
    make_diner,
    make_staff,
    post_form,
    text_of,
)

MINUTE = 60_000


@pytest.fixture
def world(conn, clock):  # noqa: ANN001, ANN201
    return populated(conn, clock.now_ms())


# --- pure rules ---------------------------------------------------------------------------


def test_the_fifth_failure_in_a_row_locks_for_fifteen_minutes() -> None:
    failed, locked = 0, None
    for _ in range(4):
        failed, locked = accounts.after_failure(failed, locked, 1_000)
        assert locked is None
    failed, locked = accounts.after_failure(failed, locked, 1_000)
    assert (failed, locked) == (5, 1_000 + 15 * MINUTE)
    assert accounts.is_locked(locked, 1_000 + 15 * MINUTE - 1)
    assert not accounts.is_locked(locked, 1_000 + 15 * MINUTE)
    # after the lock has run out, the count starts again
    assert accounts.after_failure(failed, locked, 1_000 + 15 * MINUTE) == (1, None)


@pytest.mark.parametrize("password", ["short1", "onlyletters", "12345678901", "a1" * 65])
def test_a_weak_password_may_not_be_chosen(password: str) -> None:
    assert accounts.password_problem(password, "someone") == "password_weak"


def test_the_user_name_itself_is_no_password() -> None:
    assert accounts.password_problem("clerk2026", "Clerk2026") == "password_weak"
    assert accounts.password_problem("Kantine2026", "clerk1") is None


def test_passwords_are_stored_only_as_salted_slow_hashes(conn, clock) -> None:  # noqa: ANN001
    make_staff(conn, "admin", clock.now_ms(), "a1")
    make_staff(conn, "auditor", clock.now_ms(), "a2")
    hashes = [r[0] for r in conn.execute("SELECT password_hash FROM web_accounts ORDER BY login")]
    assert all(h.startswith("scrypt:") and PASSWORD not in h for h in hashes)
    assert hashes[0] != hashes[1]  # same password, different salts


# --- staff log-in -------------------------------------------------------------------------


def test_first_log_in_forces_a_new_password_before_any_page(client, conn, clock, world) -> None:  # noqa: ANN001
    make_staff(conn, "admin", clock.now_ms(), "boss", must_change=True)
    resp = login(client, "boss")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/password")
    blocked = client.get("/dashboard")
    assert blocked.status_code == 302 and blocked.headers["Location"].endswith("/password")

    wrong_old = post_form(
        client,
        "/password",
        {"old_password": "nope1234", "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert wrong_old.status_code == 400 and "用户名或密码错误" in text_of(wrong_old)
    weak = post_form(client, "/password", {"old_password": PASSWORD, "new_password": "abc", "confirm": "abc"})
    assert weak.status_code == 400 and "至少 8 位" in text_of(weak)
    same = post_form(
        client, "/password", {"old_password": PASSWORD, "new_password": PASSWORD, "confirm": PASSWORD}
    )
    assert same.status_code == 400 and "不能与原密码相同" in text_of(same)

    done = post_form(
        client, "/password", {"old_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    )
    assert done.status_code == 302 and done.headers["Location"].endswith("/dashboard")
    assert client.get("/dashboard").status_code == 200

    client.post("/logout", data={"csrf_token": csrf_of(text_of(client.get("/dashboard")))})
    assert login(client, "boss", PASSWORD).status_code == 400  # the first password no longer works
    assert login(client, "boss", NEW_PASSWORD).headers["Location"].endswith("/dashboard")


def test_five_failed_log_ins_lock_the_account_for_15_minutes_and_are_logged(
    client, conn, clock, world, caplog
) -> None:  # noqa: ANN001
    make_staff(conn, "clerk", clock.now_ms(), "clerk1")
    caplog.set_level(logging.WARNING, logger="canteen.web")
    for attempt in range(1, 6):
        resp = login(client, "clerk1", "Wrong2026x")
        assert resp.status_code == 400
        expected = "已锁定 15 分钟" if attempt == 5 else "用户名或密码错误"
        assert expected in text_of(resp), attempt
    # locked: even the right password is refused, and that is logged too
    assert "已锁定" in text_of(login(client, "clerk1"))
    clock.advance_ms(14 * MINUTE)
    assert "已锁定" in text_of(login(client, "clerk1"))
    clock.advance_ms(1 * MINUTE)
    assert login(client, "clerk1").status_code == 302

    events = [
        r[0] for r in conn.execute("SELECT event FROM web_login_events WHERE login = 'clerk1' ORDER BY id")
    ]
    assert events == ["created", *["failed"] * 5, "locked", "refused_locked", "refused_locked", "login"]
    assert sum("locked for 15 minutes" in r.getMessage() for r in caplog.records) == 1
    assert sum("web login failed for clerk1" in r.getMessage() for r in caplog.records) == 5


def test_an_unknown_user_is_refused_like_a_wrong_password(client, conn, clock, world) -> None:  # noqa: ANN001
    make_staff(conn, "admin", clock.now_ms(), "boss")
    unknown, wrong = login(client, "nobody", PASSWORD), login(client, "boss", "Wrong2026x")
    assert unknown.status_code == wrong.status_code == 400
    assert "用户名或密码错误" in text_of(unknown) and "用户名或密码错误" in text_of(wrong)


def test_a_session_ends_after_30_idle_minutes(client, conn, clock, world) -> None:  # noqa: ANN001
    make_staff(conn, "auditor", clock.now_ms(), "audit1")
    login(client, "audit1")
    clock.advance_ms(29 * MINUTE)
    assert client.get("/dashboard").status_code == 200  # in use: the idle time starts again
    clock.advance_ms(29 * MINUTE)
    assert client.get("/dashboard").status_code == 200
    clock.advance_ms(IDLE_MS)
    resp = client.get("/dashboard")
    assert resp.status_code == 302 and "/login?next=/dashboard" in resp.headers["Location"]
    assert "登录已超时" in text_of(client.get(resp.headers["Location"]))
    assert conn.execute("SELECT count(*) FROM web_sessions").fetchone()[0] == 0


def test_logging_out_ends_the_session_on_the_server(client, conn, clock, world) -> None:  # noqa: ANN001
    make_staff(conn, "admin", clock.now_ms(), "boss")
    login(client, "boss")
    cookie = client.get_cookie("canteen_session").value
    client.post("/logout", data={"csrf_token": csrf_of(text_of(client.get("/dashboard")))})
    client.set_cookie("canteen_session", cookie)  # the old cookie, replayed
    assert client.get("/dashboard").status_code == 302


def test_the_session_cookie_is_httponly_samesite_and_secure_over_tls(app, conn, clock, world) -> None:  # noqa: ANN001
    make_staff(conn, "admin", clock.now_ms(), "boss")
    for base, secure in (("http://localhost", False), ("https://localhost", True)):
        client = app.test_client()
        page = client.get("/login", base_url=base)
        resp = client.post(
            "/login",
            base_url=base,
            data={"csrf_token": csrf_of(text_of(page)), "username": "boss", "password": PASSWORD},
            headers={"Referer": f"{base}/login"},  # over TLS the CSRF check wants this site's Referer
        )
        assert page.headers["Referrer-Policy"] == "same-origin"  # which the pages let browsers send
        cookie = next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith("canteen_session="))
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert ("Secure" in cookie) is secure


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(client, conn, clock, world) -> None:  # noqa: ANN001
    make_staff(conn, "clerk", clock.now_ms(), "clerk1")
    refused = client.post("/login", data={"username": "clerk1", "password": PASSWORD})
    assert refused.status_code == 400 and "页面已过期" in text_of(refused)
    assert client.get("/people").status_code == 302  # not signed in
    login(client, "clerk1")
    forged = client.post(f"/people/{DINER_HOLDER}/activation", data={"csrf_token": "forged"})
    assert forged.status_code == 400
    assert conn.execute("SELECT count(*) FROM web_accounts WHERE kind = 'diner'").fetchone()[0] == 0


def test_a_return_address_off_the_site_is_ignored(client, conn, clock, world) -> None:  # noqa: ANN001
    make_staff(conn, "admin", clock.now_ms(), "boss")
    token = csrf_of(text_of(client.get("/login")))
    resp = client.post(
        "/login?next=//evil.example/x", data={"csrf_token": token, "username": "boss", "password": PASSWORD}
    )
    assert resp.headers["Location"] == "/dashboard"


# --- diners -------------------------------------------------------------------------------


def test_a_diner_activates_with_the_printed_code_and_sees_only_themselves(client, conn, clock, world) -> None:  # noqa: ANN001
    make_staff(conn, "clerk", clock.now_ms(), "clerk1")
    login(client, "clerk1")
    slip = post_form(client, f"/people/{DINER_HOLDER}/activation", {}, page=f"/people/{DINER_HOLDER}")
    assert slip.status_code == 200
    code = text_of(slip).split('id="activation-code">')[1].split("<")[0]
    client.post("/logout", data={"csrf_token": csrf_of(text_of(slip))})

    def activate(code_typed: str, password: str = PASSWORD):  # noqa: ANN202
        return post_form(
            client,
            "/diner/activate",
            {
                "staff_no": DINER_STAFF_NO,
                "unit_id": "",
                "code": code_typed,
                "new_password": password,
                "confirm": password,
            },
        )

    weak = activate(code, "123")
    assert weak.status_code == 400 and "至少 8 位" in text_of(weak)  # and the code is not used up
    wrong = activate("AAAAA-AAAAA")
    assert wrong.status_code == 400 and "激活码错误" in text_of(wrong)
    ok = activate(code.lower().replace("-", " "))  # as a person might type it
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/me")
    me = text_of(client.get("/me"))
    assert "就餐经费" in me and "自费充值" in me and DINER_STAFF_NO in me
    # a diner opens nothing of anyone else's, nor any staff page
    assert client.get("/people/H00002").status_code == 403
    assert client.get("/dashboard").status_code == 403

    client.post("/logout", data={"csrf_token": csrf_of(me)})
    assert activate(code).status_code == 400  # used once
    assert diner_login(client).headers["Location"].endswith("/me")


def test_a_staff_number_used_in_two_units_asks_for_the_unit(client, conn, clock, world) -> None:  # noqa: ANN001
    conn.execute("UPDATE holders SET staff_no = 'U01-0001' WHERE id = 'H00002'")  # H00002 is in U02
    make_diner(conn, "H00001", "U01-0001", clock.now_ms())
    with write_txn(conn):
        code = accounts.issue_activation(conn, "H00002", clock.now_ms(), "test").code
        assert accounts.activate(conn, "U01-0001", "U02", code, NEW_PASSWORD, clock.now_ms()).account
    ambiguous = diner_login(client)
    assert ambiguous.status_code == 400 and "请选择您的单位" in text_of(ambiguous)
    assert diner_login(client, unit_id="U02", password=NEW_PASSWORD).status_code == 302


# --- error pages --------------------------------------------------------------------------


def test_error_pages_are_chinese_and_show_no_internals(app, client, conn, clock, world) -> None:  # noqa: ANN001
    missing = client.get("/no-such-page")
    assert missing.status_code == 404 and "页面不存在" in text_of(missing) and missing.mimetype == "text/html"
    assert client.get("/api/v1/no-such").get_json()["code"] == "not_found"  # machines still get JSON

    make_staff(conn, "clerk", clock.now_ms(), "clerk1")
    login(client, "clerk1")
    assert "无权访问" in text_of(client.get("/dashboard"))
    assert client.get("/people/NOBODY").status_code == 404

    def broken() -> str:
        raise RuntimeError("secret internals /var/db")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.view_functions["web_directory.directory"] = broken
    crashed = client.get("/directory")
    body = text_of(crashed)
    assert crashed.status_code == 500 and "系统内部错误" in body
    assert "RuntimeError" not in body and "secret" not in body and "Traceback" not in body
