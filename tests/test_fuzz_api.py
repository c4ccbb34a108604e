"""Fuzzing the HTTP API with schemathesis, from the app's own ``/openapi.json``, as every
role (admin, clerk, operator, auditor, diner) and as nobody.

Schemathesis generates requests for every operation — path values, query strings and
bodies that fit the documented schemas and ones that do not. Whatever comes, the server
answers without a 5xx, and a refused request (4xx) changes nothing: every table of the
database — accounts, ledger, sales, registry, tokens — is byte for byte what it was.
Accepted requests may change things (an admin may register a unit); the fuzzing goes on
from there.
"""

from __future__ import annotations

import hashlib
import os
import traceback
from collections.abc import Iterator

import pytest
import schemathesis
from flask import got_request_exception
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app import create_app
from server.infra import dbcopy
from server.infra.auth import ROLES, create_token
from server.infra.db import open_db, write_txn
from shared.clock import FakeClock, ms_from_china
from tests.helpers import populated, terminal

pytestmark = pytest.mark.slow

SCOPES: dict[str, dict[str, str]] = {
    "admin": {},
    "auditor": {},
    "clerk": {"unit_id": "U01"},
    "operator": {"operator": "湘味餐饮有限公司"},
    "diner": {"holder_id": "H00001"},
}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))


class Api:
    def __init__(self, tmp: str) -> None:
        self.clock = FakeClock(ms_from_china("2026-01-06T12:00"))
        # a view's exception becomes the 500 a client would see; the signal keeps the cause
        self.app = create_app(
            {"HOME": tmp, "TESTING": True, "PROPAGATE_EXCEPTIONS": False, "ECNY_GATEWAY": "simulated"},
            clock=self.clock,
        )
        self.errors: list[str] = []
        got_request_exception.connect(self._record, self.app)
        self.conn = open_db(self.app.config["DATABASE"])
        populated(self.conn, self.clock.now_ms(), diners=8)
        self.terminal = terminal(self.conn, "C01", self.clock.now_ms())
        with write_txn(self.conn):
            self.tokens = {r: create_token(self.conn, r, self.clock.now_ms(), **SCOPES[r]) for r in ROLES}
        self.schema = schemathesis.openapi.from_wsgi("/openapi.json", self.app)
        self.operations = [op.ok() for op in self.schema.get_all_operations()]

    def _record(self, sender: object, exception: BaseException, **extra: object) -> None:
        tb = traceback.extract_tb(exception.__traceback__)[-1]
        self.errors.append(
            f"{type(exception).__name__}: {exception} at {tb.filename.rsplit('/', 2)[-2:]}:{tb.lineno}"
        )

    def fingerprint(self) -> dict[str, str]:
        """Every table's content, hashed."""
        out = {}
        for t in sorted(dbcopy.tables(self.conn)):
            h = hashlib.sha256()
            for row in self.conn.execute(f'SELECT * FROM "{t}"'):  # noqa: S608 — the schema's table names
                h.update(repr(tuple(row)).encode())
            out[t] = h.hexdigest()
        return out


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    a = Api(str(tmp_path_factory.mktemp("fuzz-api")))
    yield a
    a.conn.close()


def test_the_schema_covers_the_api(api: Api) -> None:
    assert len(api.operations) >= 60, "schemathesis found fewer operations than the API has"


@pytest.mark.parametrize("role", [*ROLES, None])
def test_no_request_gets_a_5xx_and_a_refused_one_changes_nothing(api: Api, role: str | None) -> None:
    headers = {"Authorization": f"Bearer {api.tokens[role]}"} if role else {}
    problems: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        op = data.draw(st.sampled_from(api.operations), label="operation")
        case = data.draw(op.as_strategy(), label="request")
        before = api.fingerprint()
        response = case.call(headers={**(case.headers or {}), **headers})
        where = f"{case.method} {case.formatted_path} as {role or 'nobody'}"
        if response.status_code >= 500:
            cause = api.errors[-1] if api.errors else response.text[:200]
            problems.append(
                f"{case.method} {case.operation.path} as {role or 'nobody'}: {response.status_code} {cause}"
            )
        elif response.status_code >= 400:
            after = api.fingerprint()
            changed = sorted(t for t in after if after[t] != before.get(t))
            if changed:
                problems.append(f"{where}: refused with {response.status_code} but changed {changed}")

    fuzz()
    assert problems == [], "\n".join(dict.fromkeys(problems))


# What the fuzzer found, kept as plain cases (each was a 500 before its fix).
@pytest.mark.parametrize(
    ("role", "path"),
    [
        (None, "/api/v1/qr/code/0123456789abcdef/%C2%80"),  # a non-ASCII access code: TypeError
        ("auditor", "/api/v1/reports/dining-matrix?quarter=0000Q1"),  # year 0: ValueError
        ("auditor", "/api/v1/qr/incidents?since_ms=9223372036854775808"),  # beyond int64: OverflowError
        ("auditor", "/api/v1/ecny/totals?from_ms=-99999999999999999999&to_ms=1"),
    ],
)
def test_what_the_fuzzer_found_is_a_clear_refusal(api: Api, role: str | None, path: str) -> None:
    client = api.app.test_client()
    resp = client.get(path, headers={"Authorization": f"Bearer {api.tokens[role]}"} if role else {})
    assert 400 <= resp.status_code < 500 and resp.get_json()["code"] in ("invalid_input", "not_found")


def test_a_terminal_signature_that_is_not_ascii_is_refused(api: Api) -> None:
    tid = api.terminal.terminal_id
    headers = {"X-Terminal-Id": tid, "X-Terminal-Time": str(api.clock.now_ms()), "X-Terminal-Sig": "é"}
    resp = api.app.test_client().get(f"/api/v1/terminals/{tid}/snapshot", headers=headers)
    assert (resp.status_code, resp.get_json()["code"]) == (401, "bad_signature")


def test_a_body_key_that_names_a_function_argument_is_refused(api: Api) -> None:
    resp = api.app.test_client().put(
        "/api/v1/operators/湘味餐饮有限公司",
        json={"name": "x"},
        headers={"Authorization": f"Bearer {api.tokens['admin']}"},
    )
    assert (resp.status_code, resp.get_json()["code"]) == (400, "invalid_input")
