"""Tables that are sorted, searched and paged by the server (never 20,000 rows at once).

A page module describes its table once — columns, the query, how a search matches, the
default order — and gets a page of rows for the request's ``?q=&sort=&dir=&page=``, and the
same rows, unpaged, for the CSV and Excel downloads (:mod:`server.web.downloads`)::

    PEOPLE = Table(
        name="people",
        columns=(Column("staff_no", "工号", "h.staff_no"), Column("name", "姓名", "h.name"), ...),
        select_sql="SELECT h.id AS id, h.staff_no AS staff_no, h.name AS name ... FROM holders h",
        search_sql="(h.name LIKE ? ESCAPE '\\\\' OR h.staff_no = ?)",
        search_args=lambda q: [like(q), q],
        default_sort="staff_no",
        tie_break="h.id",
    )
    rows = fetch(conn, PEOPLE, TableQuery.from_args(PEOPLE, request.args), where="h.unit_id = ?", args=[u])

Sorting is by a column's own SQL expression, chosen from the table's list (a request cannot
name anything else); ``tie_break`` makes the order total, so paging neither repeats nor skips
a row. Bad parameters fall back to the defaults instead of failing. The template macro
``data_table`` (``web/macros.html``) draws the search box, sortable headers (``aria-sort``),
the rows and the pager.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from flask import g, url_for
from markupsafe import Markup, escape

from server.infra.db import like_contains
from server.web import fmt

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_SEARCH = 64
# a download is one file of every matching row, up to this many (a year's sales of a canteen)
MAX_DOWNLOAD_ROWS = 200_000
KINDS = ("text", "fen", "time", "int", "date")


def like(q: str) -> str:
    """``q`` as a LIKE pattern matching it anywhere (``%`` and ``_`` taken literally; use with
    ``ESCAPE '\\'``)."""
    return like_contains(q)


@dataclass(frozen=True)
class Column:
    key: str  # the row's key (a column alias of select_sql)
    label: str  # the header people read
    sort_sql: str | None = None  # sortable by this expression; None: not sortable
    kind: str = "text"  # text | fen (shown ¥12.50) | time (ms, Beijing) | date | int
    # a link on the cell: (endpoint, its argument's name, the row key giving its value)
    link: tuple[str, str, str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column kind {self.kind!r}")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    select_sql: str  # SELECT … FROM … (no WHERE: conditions are added)
    default_sort: str
    tie_break: str  # an expression unique per row, appended to every ORDER BY
    search_sql: str | None = None  # a condition with ? placeholders
    search_args: Callable[[str], Sequence[Any]] = field(default=lambda q: [])
    # tried first when given: exact matches found by index (an id, a 工号, a card number); only
    # when there is none does the broader search_sql (a scan: part of a name) run
    exact_sql: str | None = None
    exact_args: Callable[[str], Sequence[Any]] = field(default=lambda q: [])
    default_desc: bool = False
    page_size: int = PAGE_SIZE
    search_label: str = "搜索"

    def column(self, key: str) -> Column | None:
        return next((c for c in self.columns if c.key == key), None)


@dataclass(frozen=True)
class TableQuery:
    q: str
    sort: str
    desc: bool
    page: int
    size: int

    @classmethod
    def from_args(cls, table: Table, args: Mapping[str, str]) -> TableQuery:
        sort = args.get("sort", table.default_sort)
        column = table.column(sort)
        if column is None or column.sort_sql is None:
            sort = table.default_sort
        direction = args.get("dir")
        desc = table.default_desc if direction not in ("asc", "desc") else direction == "desc"
        return cls(
            q=(args.get("q") or "").strip()[:MAX_SEARCH],
            sort=sort,
            desc=desc,
            page=_positive(args.get("page"), 1, 10**9),
            size=min(table.page_size, MAX_PAGE_SIZE),
        )

    def args(self, **changes: Any) -> dict[str, Any]:
        """The query string of this view with ``changes`` (for links: sort, next page…)."""
        q = replace(self, **changes)
        out: dict[str, Any] = {"sort": q.sort, "dir": "desc" if q.desc else "asc"}
        if q.q:
            out["q"] = q.q
        if q.page != 1:
            out["page"] = q.page
        return out


def _positive(raw: str | None, default: int, most: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        return default
    return min(max(value, 1), most)


@dataclass(frozen=True)
class TablePage:
    table: Table
    query: TableQuery
    rows: list[dict[str, Any]]
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.query.size))

    @property
    def first_row(self) -> int:
        return (self.query.page - 1) * self.query.size + 1 if self.rows else 0

    @property
    def last_row(self) -> int:
        return self.first_row + len(self.rows) - 1 if self.rows else 0

    def url(self, endpoint: str, args: Mapping[str, Any], fmt: str | None = None, **changes: Any) -> str:
        """The address of this table's page ``endpoint`` (with its own ``args``), keeping the
        search and order, with ``changes`` (sort, desc, page); ``fmt`` asks for a download."""
        extra = {"format": fmt} if fmt else {}
        return url_for(endpoint, **{**args, **self.query.args(**changes), **extra})


def _where(
    table: Table, query: TableQuery, where: str, args: Sequence[Any], exact: bool = False
) -> tuple[str, list[Any]]:
    conditions, params = [], list(args)
    if where:
        conditions.append(f"({where})")
    if query.q and exact and table.exact_sql:
        conditions.append(table.exact_sql)
        params.extend(table.exact_args(query.q))
    elif query.q and table.search_sql:
        conditions.append(table.search_sql)
        params.extend(table.search_args(query.q))
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params


def _passes(table: Table, query: TableQuery) -> tuple[bool, ...]:
    """Exact matches first, when the table has them, then the broad search."""
    return (True, False) if query.q and table.exact_sql else (False,)


def _order(table: Table, query: TableQuery) -> str:
    column = table.column(query.sort)
    expr = column.sort_sql if column and column.sort_sql else table.tie_break
    direction = "DESC" if query.desc else "ASC"
    return f" ORDER BY {expr} {direction}, {table.tie_break} {direction}"


def fetch(
    conn: sqlite3.Connection,
    table: Table,
    query: TableQuery,
    where: str = "",
    args: Sequence[Any] = (),
    *,
    search_total: int | None = None,
) -> TablePage:
    """One page of the rows matching ``where`` (the caller's scope) and the search. A first
    page that is not full needs no count (it is its own total); ``search_total``: how many rows
    the broad search matches, when the caller knows it from an index (no count is run)."""
    for exact in _passes(table, query):
        condition, params = _where(table, query, where, args, exact)
        order = _order(table, query)
        rows: list[Any] = []
        if query.page == 1:
            rows = conn.execute(
                f"{table.select_sql}{condition}{order} LIMIT ?", [*params, query.size]
            ).fetchall()
            if len(rows) < query.size:
                if rows or not exact:
                    return TablePage(table, query, [dict(r) for r in rows], len(rows))
                continue
        if search_total is not None and not exact:
            total = search_total
        else:
            count_sql = f"SELECT count(*) FROM ({table.select_sql}{condition})"
            total = conn.execute(count_sql, params).fetchone()[0]
        if exact and not total:
            continue
        page = min(query.page, max(1, math.ceil(total / query.size)))
        if page != 1 or not rows:
            query = replace(query, page=page)
            rows = conn.execute(
                f"{table.select_sql}{condition}{order} LIMIT ? OFFSET ?",
                [*params, query.size, (page - 1) * query.size],
            ).fetchall()
        return TablePage(table, replace(query, page=page), [dict(r) for r in rows], total)
    raise AssertionError("the broad pass always returns")


def fetch_all(
    conn: sqlite3.Connection, table: Table, query: TableQuery, where: str = "", args: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    """Every matching row in the page's order (up to :data:`MAX_DOWNLOAD_ROWS`), for a download."""
    for exact in _passes(table, query):
        condition, params = _where(table, query, where, args, exact)
        rows = conn.execute(
            f"{table.select_sql}{condition}{_order(table, query)} LIMIT ?", [*params, MAX_DOWNLOAD_ROWS]
        ).fetchall()
        if rows or not exact:
            return [dict(r) for r in rows]
    return []


def cell_html(column: Column, row: Mapping[str, Any]) -> Markup:
    """One cell as the table shows it: amounts ``¥12.50``, times in Beijing, ``—`` for
    nothing, a link when the column has one (its address built once per page, not per row:
    ``url_for`` for every row was most of the time a page of 50 people took to draw)."""
    v = row.get(column.key)
    if column.kind == "fen":
        text = fmt.yuan(v)
    elif column.kind == "time":
        text = fmt.china_time(v)
    elif v is None or v == "":
        text = fmt.DASH
    else:
        text = str(v)
    link = column.link
    if link and row.get(link[2]):
        return Markup('<a href="{}">{}</a>').format(_link(link[0], link[1], str(row[link[2]])), text)
    return escape(text)


_SLOT = "\x00slot\x00"
_PATH_SAFE = "!$&'()*+,/:;=@"  # what werkzeug's default converter leaves unquoted in a path


def _link(endpoint: str, arg: str, value: str) -> str:
    """``url_for(endpoint, arg=value)`` for a path argument, built once per request and
    endpoint and then filled in (a table links every row)."""
    cache = g.setdefault("web_link_patterns", {})
    pattern = cache.get((endpoint, arg))
    if pattern is None:
        try:
            pattern = url_for(endpoint, **{arg: _SLOT}).replace(quote(_SLOT), "{}")
        except ValueError:  # a typed path argument (<int:…>) takes no placeholder: no shortcut
            pattern = ""
        if "{}" not in pattern:  # not a path argument: no shortcut
            pattern = ""
        cache[(endpoint, arg)] = pattern
    return (
        pattern.replace("{}", quote(value, safe=_PATH_SAFE)) if pattern else url_for(endpoint, **{arg: value})
    )
