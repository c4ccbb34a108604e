"""Finding cardholders by part of their name, through an index (``holder_name_grams``).

Chinese names are two to four characters and people search them by any part — the surname,
the given name, the whole name — so the index holds every single character and every pair
of neighbouring characters of each name (:func:`grams`: 张三丰 → 张 三 丰 张三 三丰), each
with its holder. A search for one or two characters is one index lookup; a longer one looks
up its rarest pair and keeps the names that contain the whole text. Latin letters are
indexed in lower case (``LIKE`` ignores their case too).

* :func:`index_new` and :func:`reindex` keep a holder's grams in step with their name; they
  are called wherever a name is written (:func:`server.registry.units.add_holder`, the
  roster import, :func:`rename`), in the same transaction.
* :func:`plan` chooses how a search runs: few candidates → by the index; a text most names
  contain (the whole city shares a surname) → walking the names in the page's order, which
  stops after the page, with the number of matches read from the index (no scan to count).
* :func:`mismatches` recomputes the index from the names (``canteen-server check``);
  :func:`rebuild` rewrites it (the migration that made the table filled it the same way).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from server.books.ledger import Violation
from server.infra.db import like_contains
from shared.errors import DomainError

MAX_NAME = 64
# a search with at most this many candidates in the index looks them up one by one; with
# more, walking the names in page order finds a page sooner than looking up each candidate
SELECTIVE = 2_000


def normalise(text: str) -> str:
    """A name or search text as indexed: ASCII letters in lower case (SQL ``lower()``
    changes those alone in SQLite, and ``LIKE`` ignores their case), all else as it is."""
    return "".join(c.lower() if c.isascii() else c for c in text)


def grams(name: str) -> set[str]:
    """Every character and every pair of neighbouring characters of the name."""
    n = normalise(name)
    return {n[i : i + 1] for i in range(len(n))} | {n[i : i + 2] for i in range(len(n) - 1)}


def index_new(conn: sqlite3.Connection, named: Iterable[tuple[str, str]]) -> None:
    """Index holders just created, from ``(holder id, name)`` pairs (inside the write
    transaction that inserted them)."""
    conn.executemany(  # in the index's order: each insert lands beside the one before
        "INSERT INTO holder_name_grams(gram, holder_id) VALUES (?, ?)",
        sorted((g, holder_id) for holder_id, name in named for g in grams(name)),
    )


def reindex(conn: sqlite3.Connection, renamed: Iterable[tuple[str, str, str]]) -> None:
    """Follow renames, from ``(holder id, old name, new name)`` (inside the write transaction
    that renamed them): the grams only the old name had go, those only the new one has come."""
    gone, added = [], []
    for holder_id, old, new in renamed:
        before, after = grams(old), grams(new)
        gone += [(g, holder_id) for g in before - after]
        added += [(g, holder_id) for g in after - before]
    conn.executemany("DELETE FROM holder_name_grams WHERE gram = ? AND holder_id = ?", gone)
    conn.executemany("INSERT INTO holder_name_grams(gram, holder_id) VALUES (?, ?)", sorted(added))


def rename(conn: sqlite3.Connection, holder_id: str, name: str) -> None:
    """Change a cardholder's name (inside a write transaction), with its index entries."""
    if len(name) > MAX_NAME:
        raise DomainError(
            "invalid_input", f"name longer than {MAX_NAME} characters", zh=f"姓名不超过 {MAX_NAME} 个字"
        )
    row = conn.execute("SELECT name FROM holders WHERE id = ?", (holder_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"holder {holder_id}")
    conn.execute("UPDATE holders SET name = ? WHERE id = ?", (name, holder_id))
    reindex(conn, [(holder_id, row[0], name)])


def rebuild(conn: sqlite3.Connection) -> None:
    """Rewrite the whole index from the names (inside a write transaction): for holders
    written around this module (bulk-generated benchmark data)."""
    conn.execute("DELETE FROM holder_name_grams")
    index_new(conn, conn.execute("SELECT id, name FROM holders").fetchall())


def mismatches(conn: sqlite3.Connection, limit: int = 20) -> list[Violation]:
    """Holders whose index entries are not the grams of their name (empty: all agree)."""
    indexed: dict[str, set[str]] = {}
    for gram, holder_id in conn.execute("SELECT gram, holder_id FROM holder_name_grams"):
        indexed.setdefault(holder_id, set()).add(gram)
    out = []
    for holder_id, name in conn.execute("SELECT id, name FROM holders ORDER BY id"):
        if indexed.pop(holder_id, set()) != grams(name):
            out.append(Violation("name_index_mismatch", f"holder {holder_id}: index differs from the name"))
    out += [Violation("name_index_mismatch", f"index entries of unknown holder {h}") for h in sorted(indexed)]
    return out[:limit]


@dataclass(frozen=True)
class Plan:
    """How to run one name search: a condition on ``h`` (holders) with its arguments, and
    the number of holders it matches when the index alone tells (else None: count them)."""

    sql: str
    args: tuple[str, ...]
    total: int | None


def plan(conn: sqlite3.Connection, q: str, *, scoped: bool) -> Plan:
    """The condition finding holders whose name contains ``q``. ``scoped``: the caller adds
    a condition of its own (a clerk's unit), so the index's count is not the answer's."""
    n = normalise(q)
    keys = {n} if len(n) <= 2 else {n[i : i + 2] for i in range(len(n) - 1)}
    counts = {
        k: conn.execute("SELECT count(*) FROM holder_name_grams WHERE gram = ?", (k,)).fetchone()[0]
        for k in keys
    }
    rarest = min(counts, key=lambda k: (counts[k], k))
    like = "h.name LIKE ? ESCAPE '\\'"
    exact_count = counts[rarest] if len(n) <= 2 and not scoped else None
    if counts[rarest] <= SELECTIVE:
        sql = f"(h.id IN (SELECT holder_id FROM holder_name_grams WHERE gram = ?) AND {like})"
        return Plan(sql, (rarest, like_contains(q)), exact_count)
    return Plan(f"({like})", (like_contains(q),), exact_count)
