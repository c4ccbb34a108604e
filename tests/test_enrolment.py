"""One-time enrolment codes (issue 15): typed forgivingly, stored hashed, spent once, refused
with a stable code when used, expired, cancelled or wrong — and wrong ones rate-limited."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from server.app import create_app
from server.infra.auth import create_token
from server.infra.db import open_db, write_txn
from server.registry import enrolment
from shared.enrolment_code import canonical, code_hash, display, new_code
from shared.errors import DomainError
from tests.helpers import populated

NOW = 1_767_672_000_000
HOUR = 3600_000


def test_a_code_is_typeable_and_read_forgivingly() -> None:
    code = new_code(random.Random(1).choice)
    shown = display(code)
    assert len(code) == 16 and shown.count("-") == 3 and len(shown) == 19
    assert canonical(shown) == code
    assert canonical(shown.lower().replace("-", " ")) == code
    assert canonical("7kqm-2xpa-9d4t-hw3r") == "7KQM2XPA9D4THW3R"
    assert canonical("IOL0-0000-0000-0000") == "1010000000000000"  # I, L → 1 and O → 0
    assert canonical("7KQM-2XPA-9D4T-HW3") is None  # one short
    assert canonical("7KQM-2XPA-9D4T-HW3U") is None  # U is not in the alphabet


@pytest.fixture
def conn(app):  # noqa: ANN001, ANN201
    c = open_db(app.config["DATABASE"])
    populated(c, NOW, diners=6)
    yield c
    c.close()


def issue(conn, **kw):  # noqa: ANN001, ANN003, ANN201
    with write_txn(conn):
        return enrolment.issue(conn, "C01", kw.pop("now", NOW), broker_url="mqtts://broker:8883", **kw)


def redeem(conn, code: str, remote: str = "10.0.0.7", now: int = NOW + HOUR, wrong=None):  # noqa: ANN001, ANN201
    with write_txn(conn):
        return enrolment.redeem(conn, code, remote, now, "ab" * 32, wrong or enrolment.WrongCodes())


def test_a_code_gives_out_one_terminal_once(conn) -> None:  # noqa: ANN001
    issued = issue(conn)
    assert issued.terminal_id == "T0001"
    stored = conn.execute("SELECT code_hash FROM enrolments").fetchone()[0]
    assert stored == code_hash(canonical(issued.code)) and issued.code.replace("-", "") not in stored
    first = redeem(conn, issued.code.lower())
    assert first.refusal is None and first.credentials is not None
    assert first.credentials.terminal_id == "T0001" and len(first.credentials.secret_hex) == 64
    assert first.broker_url == "mqtts://broker:8883"
    second = redeem(conn, issued.code)
    assert (second.refusal, second.credentials) == ("enrolment_code_used", None)
    assert conn.execute("SELECT count(*) FROM terminals").fetchone()[0] == 1


def test_an_expired_code_is_refused(conn) -> None:  # noqa: ANN001
    issued = issue(conn)
    assert redeem(conn, issued.code, now=NOW + 24 * HOUR).refusal == "enrolment_code_expired"
    assert conn.execute("SELECT count(*) FROM terminals").fetchone()[0] == 0


def test_a_cancelled_code_is_refused_and_its_id_stays_reserved(conn) -> None:  # noqa: ANN001
    issued = issue(conn)
    with write_txn(conn):
        assert enrolment.retire(conn, issued.terminal_id, NOW) == "cancelled"
    assert redeem(conn, issued.code).refusal == "enrolment_code_cancelled"
    assert issue(conn).terminal_id == "T0002"  # the next code does not reuse T0001


def test_wrong_codes_are_rate_limited_per_caller(conn) -> None:  # noqa: ANN001
    issued = issue(conn)
    wrong_codes = enrolment.WrongCodes()
    wrong = display(new_code(random.Random(2).choice))
    for _ in range(enrolment.MAX_FAILURES):
        assert redeem(conn, wrong, wrong=wrong_codes).refusal == "enrolment_code_invalid"
    assert redeem(conn, "not even a code", wrong=wrong_codes).refusal == "enrolment_rate_limited"
    # even the right one, for now
    assert redeem(conn, issued.code, wrong=wrong_codes).refusal == "enrolment_rate_limited"
    later = NOW + HOUR + enrolment.FAILURE_WINDOW_MS + 1
    assert (
        redeem(conn, wrong, now=later, wrong=wrong_codes).refusal == "enrolment_code_invalid"
    )  # window passed
    other = redeem(conn, issued.code, remote="10.0.0.8", wrong=wrong_codes)  # another caller
    assert other.credentials is not None


def test_the_rate_limit_rule() -> None:
    t = NOW
    window = enrolment.FAILURE_WINDOW_MS
    assert not enrolment.rate_limited([t] * (enrolment.MAX_FAILURES - 1), t)
    assert enrolment.rate_limited([t] * enrolment.MAX_FAILURES, t)
    assert not enrolment.rate_limited([t - window] * enrolment.MAX_FAILURES, t)  # all out of the window


def test_a_reserved_or_taken_terminal_id_is_refused(conn) -> None:  # noqa: ANN001
    issue(conn, terminal_id="KITCHEN-1")
    with pytest.raises(DomainError) as taken:
        issue(conn, terminal_id="KITCHEN-1")
    assert taken.value.code == "already_exists"
    with pytest.raises(DomainError) as bad:
        issue(conn, terminal_id="server")
    assert bad.value.code == "bad_terminal_id"


def test_the_api_issues_redeems_and_logs_refusals(app, client, conn, caplog) -> None:  # noqa: ANN001
    with write_txn(conn):
        admin = create_token(conn, "admin", NOW)
    made = client.post(
        "/api/v1/enrolments",
        json={"canteen_id": "C01", "broker_url": "mqtt://127.0.0.1:1883"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert made.status_code == 201, made.get_json()
    code = made.get_json()["code"]
    got = client.post("/api/v1/enrol", json={"code": code})
    assert got.status_code == 200 and got.headers["Cache-Control"] == "no-store"
    config = got.get_json()
    assert config["terminal_id"] == made.get_json()["terminal_id"] and len(config["secret_hex"]) == 64
    assert config["server_public_key"] == app.extensions["canteen_server_key"].public_hex
    files = Path(app.config["MQTT_PASSWORD_FILE"]).read_text()
    assert f"{config['terminal_id']}:$7$" in files  # the broker's users rewritten at once
    with caplog.at_level(logging.WARNING, logger="server.api.fleet"):
        again = client.post("/api/v1/enrol", json={"code": code})
        wrong = client.post("/api/v1/enrol", json={"code": "0000-0000-0000-0000"})
    assert (again.status_code, again.get_json()["code"]) == (403, "enrolment_code_used")
    assert (wrong.status_code, wrong.get_json()["code"]) == (403, "enrolment_code_invalid")
    assert secrets_absent(again.get_json(), config["secret_hex"])
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("enrolment_refused: enrolment_code_used") for m in logged), logged
    assert any(m.startswith("enrolment_refused: enrolment_code_invalid") for m in logged), logged


def secrets_absent(body: dict, secret_hex: str) -> bool:
    return secret_hex not in str(body)


@pytest.mark.parametrize("hops", [0, 1])
def test_behind_a_proxy_each_caller_has_its_own_limit_and_a_forged_header_escapes_none(
    tmp_path: Path,
    clock,
    hops: int,  # noqa: ANN001
) -> None:
    """PROXY_HOPS=1: the TLS front's X-Forwarded-For names the caller, so an installer's
    typos do not lock out the others; PROXY_HOPS=0 (no proxy): the header is the caller's own
    writing and is ignored, so changing it escapes no lockout."""
    app = create_app({"HOME": str(tmp_path), "TESTING": True, "PROXY_HOPS": hops}, clock=clock)
    client = app.test_client()

    def wrong(caller: str) -> str:
        got = client.post(
            "/api/v1/enrol",
            json={"code": "0000-0000-0000-0000"},
            headers={"X-Forwarded-For": caller},
            environ_base={"REMOTE_ADDR": "10.0.0.1"},  # the proxy, or the one caller
        )
        return got.get_json()["code"]

    for _ in range(enrolment.MAX_FAILURES):
        assert wrong("192.0.2.7") == "enrolment_code_invalid"
    assert wrong("192.0.2.7") == "enrolment_rate_limited"
    other = wrong("198.51.100.9")
    assert other == ("enrolment_code_invalid" if hops else "enrolment_rate_limited")
