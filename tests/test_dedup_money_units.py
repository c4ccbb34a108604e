"""A unit's quarterly meal-fund standard is refused alike when a unit is added and when it
is changed: a whole number of fen, not negative (no bool, no float), the same code and text."""

from __future__ import annotations

import pytest

from server.infra.db import open_db, write_txn
from server.registry import units as registry
from shared.errors import DomainError

BAD = [-1, True, 1.5]


@pytest.mark.parametrize("fen", BAD)
def test_a_bad_standard_is_refused_alike_on_add_and_update(fen: object) -> None:
    conn = open_db(":memory:")
    with write_txn(conn):
        registry.add_unit(conn, "U1", "市财政局", 30_000)
    refusals = []
    for change in (
        lambda: registry.add_unit(conn, "U2", "市教育局", fen),  # type: ignore[arg-type]
        lambda: registry.update_unit(conn, "U1", quarterly_standard_fen=fen),  # type: ignore[arg-type]
    ):
        with write_txn(conn), pytest.raises(DomainError) as err:
            change()
        refusals.append((err.value.code, err.value.detail, err.value.context))
    assert refusals[0] == refusals[1]
    assert refusals[0] == (
        "invalid_input",
        "quarterly standard must be a whole number of fen ≥ 0",
        {"zh": "季度补贴标准须为不小于 0 的金额"},
    )
    assert conn.execute("SELECT quarterly_standard_fen FROM units WHERE id = 'U1'").fetchone()[0] == 30_000
    assert conn.execute("SELECT count(*) FROM units").fetchone()[0] == 1
