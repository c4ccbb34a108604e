"""Sale ids: unique, unguessable, and ordered by time (so the server's index stays hot)."""

from __future__ import annotations

import uuid

from shared.ids import uuid7_hex


def test_sale_ids_are_time_ordered_version_7_uuids() -> None:
    a, b = uuid7_hex(1_767_672_000_000), uuid7_hex(1_767_672_000_001)
    assert a < b  # later sales sort later in the server's index
    u = uuid.UUID(a)
    assert u.version == 7 and u.variant == uuid.RFC_4122
    early = uuid7_hex(0)  # leading zero digits kept: always 32 lowercase hex digits
    assert len(early) == 32 and uuid.UUID(early).hex == early and uuid.UUID(a).hex == a
    assert len({uuid7_hex(5) for _ in range(1000)}) == 1000  # random part keeps them unique
