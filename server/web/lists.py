"""Tables over rows a report function already computed: sorted, searched and paged here.

The money reports (:mod:`server.closing.reports`, :mod:`server.closing.quality`, a settlement
document…) return their rows as lists; showing them must not mean writing their SQL a second
time. A :class:`ListTable` describes such a table with the same :class:`~server.web.tables.Column`
as a SQL table, and :func:`page_of` gives the :class:`~server.web.tables.TablePage` the
``data_table`` macro draws (sortable headers, search box, pager, downloads), for the request's
``?q=&sort=&dir=&page=``; :func:`rows_of` the same rows, unpaged, for a download.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from server.web.tables import Column, Table, TablePage, TableQuery

IN_MEMORY = "(in memory)"  # a Table's search_sql when its rows are searched here


@dataclass(frozen=True)
class ListTable:
    table: Table
    search_keys: tuple[str, ...] = ()

    def query(self, args: Mapping[str, str]) -> TableQuery:
        return TableQuery.from_args(self.table, args)


def list_table(
    name: str,
    columns: Sequence[Column],
    default_sort: str,
    *,
    search_keys: Sequence[str] = (),
    search_label: str = "搜索",
    default_desc: bool = False,
    page_size: int = 50,
) -> ListTable:
    """A table of precomputed rows; a column is sortable when its ``sort_sql`` is set (to
    anything: rows are sorted by the column's own key)."""
    return ListTable(
        Table(
            name=name,
            columns=tuple(columns),
            select_sql="",
            default_sort=default_sort,
            tie_break="",
            search_sql=IN_MEMORY if search_keys else None,
            default_desc=default_desc,
            page_size=page_size,
            search_label=search_label,
        ),
        tuple(search_keys),
    )


def _sort_key(value: object) -> tuple[int, Any]:
    if value is None or value == "":
        return (1, 0)  # empty cells last when ascending
    if isinstance(value, bool | int | float):
        return (0, (0, value))
    return (0, (1, str(value)))


def rows_of(lt: ListTable, rows: Sequence[dict[str, Any]], query: TableQuery) -> list[dict[str, Any]]:
    """The rows matching the search, in the asked order (ties keep the report's own order)."""
    out = list(rows)
    if query.q and lt.search_keys:
        needle = query.q.casefold()
        out = [r for r in out if any(needle in str(r.get(k) or "").casefold() for k in lt.search_keys)]
    return sorted(out, key=lambda r: _sort_key(r.get(query.sort)), reverse=query.desc)


def page_of(lt: ListTable, rows: Sequence[dict[str, Any]], query: TableQuery) -> TablePage:
    matching = rows_of(lt, rows, query)
    pages = max(1, -(-len(matching) // query.size))
    query = replace(query, page=min(query.page, pages))
    start = (query.page - 1) * query.size
    return TablePage(lt.table, query, matching[start : start + query.size], len(matching))
