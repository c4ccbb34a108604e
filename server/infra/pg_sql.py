"""SQLite's dialect, as the server writes it, rewritten for PostgreSQL (pure text in, text out).

The server's SQL is hand-written in the common subset of SQLite and PostgreSQL; this module
covers the few places where the two still differ, so that every module keeps its SQL as it is:

* ``?`` and ``?NNN`` placeholders become psycopg's ``%s`` (a literal ``%`` becomes ``%%``);
  numbered ones are expanded into a positional order (:attr:`Translated.order`);
* ``INSERT OR IGNORE`` becomes ``INSERT … ON CONFLICT DO NOTHING``;
* a subquery in FROM without a name gets one (PostgreSQL 15 requires it);
* a product of two integer literals is folded (PostgreSQL types literals as 32-bit);
* ``? IS NULL`` gets a type (``CAST(? AS TEXT)``): PostgreSQL cannot infer one;
* ``a = b COLLATE NOCASE`` becomes ``lower(a) = lower(b)``; ``LIKE`` becomes ``ILIKE``
  (SQLite's LIKE ignores ASCII case);
* the column named ``by`` (a reserved word in PostgreSQL) is quoted;
* in DDL: ``STRICT`` / ``WITHOUT ROWID`` are dropped, ``INTEGER`` is ``BIGINT`` (fen sums
  and millisecond times outgrow 32 bits), a money column (``*_fen INTEGER``) is the domain
  ``canteen_fen`` (a whole number or an error, where a BIGINT column would round 1.5 as
  PostgreSQL's assignment cast does; SQLite's STRICT refuses it), ``INTEGER PRIMARY KEY`` is
  an identity column (SQLite's rowid alias), ``REAL`` is ``DOUBLE PRECISION``, ``BLOB`` is ``BYTEA``, ``TEXT``
  compares byte-wise (``COLLATE "C"``, SQLite's BINARY) whatever the database's locale, and
  the tables whose insertion order the code reads (:data:`ROWID_TABLES`) get a ``rowid``.

SQLite functions without a PostgreSQL twin (``printf``, ``strftime``, ``typeof``, ``instr``,
scalar ``max``/``min``, ``sum`` of a condition) are not rewritten here:
:mod:`server.infra.schema_pg` defines them in the database. What neither covers is outside
the subset (``INSERT OR REPLACE``, ``GLOB``, ``PRAGMA`` other than the tuning ones) and
raises :class:`NotPortable`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# tables whose implicit rowid the code orders by (newest card, newest QR credential); they
# get an identity column named rowid, which rows read back never show (as in SQLite)
ROWID_TABLES = frozenset({"cards", "qr_credentials", "restores"})

_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\$\$.*?\$\$", re.S)
_HOLE = "\x00{}\x00"
_HOLE_RE = re.compile("\x00(\\d+)\x00")
_PARAM = re.compile(r"\?(\d*)")
_OR_IGNORE = re.compile(r"\bINSERT\s+OR\s+IGNORE\s+INTO\b", re.I)
_NOT_PORTABLE = re.compile(
    r"\bINSERT\s+OR\s+(REPLACE|ABORT|FAIL|ROLLBACK)\b|\bREPLACE\s+INTO\b|\bGLOB\b", re.I
)
_RETURNING = re.compile(r"\bRETURNING\b", re.I)
_NOCASE = re.compile(r"([\w.]+|%s)\s*=\s*([\w.]+|%s)\s+COLLATE\s+NOCASE\b", re.I)
_LIKE = re.compile(r"\bLIKE\b", re.I)
_PARAM_IS_NULL = re.compile(r"%s(\s+IS\s+(NOT\s+)?NULL\b)", re.I)
_BY_COLUMN = re.compile(r"(?<![\w.])(\w+\s+)?\bby\b(?!\s*\()")
_BY_KEYWORDS = {"order", "group", "partition"}
_DDL = re.compile(r"^\s*(CREATE\s+TABLE|ALTER\s+TABLE)\b", re.I)
_CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\(", re.I)
_STRICT = re.compile(r"\)\s*STRICT\b(\s*,\s*WITHOUT\s+ROWID)?|\)\s*WITHOUT\s+ROWID\b(\s*,\s*STRICT)?", re.I)
_FEN_COLUMN = re.compile(r"\b(\w+_fen)\s+INTEGER\b", re.I)
_ROWID_PK = re.compile(r"\b(\w+)\s+INTEGER\s+PRIMARY\s+KEY\b(?!\s*\()", re.I)
_TYPES = (
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
)
# types are written in capitals in the schema, names in lower case: a column named ``text``
# stays a name (case-sensitive on purpose)
_TEXT = re.compile(r"\bTEXT\b")
_INTEGER = re.compile(r"\bINTEGER\b")
_SUBQUERY = re.compile(r"\b(FROM|JOIN)\s*\(\s*(SELECT|VALUES|WITH)\b", re.I)
_NOT_ALIAS = re.compile(
    r"\s*($|[),;]|(WHERE|GROUP|ORDER|LIMIT|OFFSET|UNION|EXCEPT|INTERSECT|JOIN|LEFT|RIGHT|INNER|"
    r"CROSS|FULL|NATURAL|ON|USING|HAVING|WINDOW|RETURNING)\b)",
    re.I,
)
_PRODUCT = re.compile(r"(?<![\w.])(\d+)\s*\*\s*(\d+)(?![\w.])")


class NotPortable(ValueError):
    """SQL outside the subset both databases run (a programming error, not user input)."""


@dataclass(frozen=True)
class Translated:
    """PostgreSQL text, and for numbered placeholders the 0-based index of the SQLite
    parameter each ``%s`` takes, in order (None: positional as written)."""

    sql: str
    order: tuple[int, ...] | None


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> Translated:
    """One statement with parameters, as psycopg runs it (``%s`` placeholders)."""
    code, literals = _hide_literals(sql)
    if _NOT_PORTABLE.search(code):
        raise NotPortable(f"not in the SQLite/PostgreSQL common subset: {sql.strip()[:120]}")
    code = code.replace("%", "%%")
    order: list[int] = []
    numbered = False
    nxt = 0

    def param(m: re.Match[str]) -> str:
        nonlocal numbered, nxt
        if m.group(1):
            numbered = True
            nxt = int(m.group(1))
            order.append(nxt - 1)
        else:
            order.append(nxt)
            nxt += 1
        return "%s"

    code = _PARAM.sub(param, code)
    code = _statement(code)
    text = _restore(code, [lit.replace("%", "%%") for lit in literals])
    return Translated(text, tuple(order) if numbered else None)


def translate_script(sql: str) -> str:
    """Several statements without parameters (a migration), run as one simple query."""
    code, literals = _hide_literals(sql)
    if _NOT_PORTABLE.search(code):
        raise NotPortable(f"not in the SQLite/PostgreSQL common subset: {sql.strip()[:120]}")
    statements = [s for s in code.split(";") if s.strip()]
    return _restore(";\n".join(_statement(s) for s in statements) + ";\n", literals)


def _statement(code: str) -> str:
    code = _fold_products(code)
    code = _alias_subqueries(code)
    if _OR_IGNORE.search(code):
        code = _OR_IGNORE.sub("INSERT INTO", code)
        ret = list(_RETURNING.finditer(code))
        if ret:
            at = ret[-1].start()
            code = code[:at] + "ON CONFLICT DO NOTHING " + code[at:]
        else:
            code = code.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    code = _NOCASE.sub(r"lower(\1) = lower(\2)", code)
    code = _PARAM_IS_NULL.sub(r"CAST(%s AS TEXT)\1", code)
    code = _LIKE.sub("ILIKE", code)
    code = _BY_COLUMN.sub(_quote_by, code)
    if _DDL.match(code):
        return _ddl(code)
    return _INTEGER.sub("BIGINT", code)  # CAST(x AS INTEGER): 64-bit, as in SQLite


def _alias_subqueries(code: str) -> str:
    """``FROM (SELECT …)`` without a name gets one (PostgreSQL before 16 requires it)."""
    out, pos, n = [], 0, 0
    for m in _SUBQUERY.finditer(code):
        start = code.index("(", m.start())
        if start < pos:
            continue  # inside a subquery already handled (its text is copied whole)
        end = _closing(code, start)
        if end is None:
            return code
        inner = _alias_subqueries(code[start + 1 : end])
        out.append(code[pos:start] + "(" + inner + ")")
        pos = end + 1
        if _NOT_ALIAS.match(code, pos):
            n += 1
            out.append(f" AS _sub{n}")
    out.append(code[pos:])
    return "".join(out)


def _closing(code: str, start: int) -> int | None:
    depth = 0
    for i in range(start, len(code)):
        if code[i] == "(":
            depth += 1
        elif code[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return None


def _fold_products(code: str) -> str:
    """``90 * 86400000`` → ``7776000000``: a BIGINT literal, where PostgreSQL would multiply
    two 32-bit literals and overflow. Not after ``/`` or ``%`` (``x / 2 * 3`` is (x/2)*3)."""
    pos = 0
    while (m := _PRODUCT.search(code, pos)) is not None:
        if code[: m.start()].rstrip()[-1:] in ("/", "%"):
            pos = m.end(1)
            continue
        product = str(int(m.group(1)) * int(m.group(2)))
        code = code[: m.start()] + product + code[m.end() :]
        pos = m.start()
    return code


def _quote_by(m: re.Match[str]) -> str:
    before = m.group(1) or ""
    if before.strip().lower() in _BY_KEYWORDS:
        return m.group(0)
    return before + '"by"'


def _ddl(code: str) -> str:
    code = _STRICT.sub(")", code)
    code = _ROWID_PK.sub(r"\1 BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", code)
    code = _FEN_COLUMN.sub(r"\1 canteen_fen", code)
    for pattern, pg_type in _TYPES:
        code = pattern.sub(pg_type, code)
    code = _TEXT.sub('TEXT COLLATE "C"', code)
    created = _CREATE_TABLE.match(code)
    if created and created.group(1).lower() in ROWID_TABLES:
        at = created.end()
        code = code[:at] + "\n    rowid BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE," + code[at:]
    return code


def _hide_literals(sql: str) -> tuple[str, list[str]]:
    """The code with each string literal, quoted identifier and $$ body replaced by a hole
    (comments dropped), and the literals in order."""
    literals: list[str] = []

    def hide(m: re.Match[str]) -> str:
        text = m.group(0)
        if text.startswith("--"):
            return " "
        literals.append(text)
        return _HOLE.format(len(literals) - 1)

    return _LITERAL.sub(hide, sql), literals


def _restore(code: str, literals: list[str]) -> str:
    return _HOLE_RE.sub(lambda m: literals[int(m.group(1))], code)
