"""The cross-unit dining matrix as a heat map: an HTML table, a colour per cell, the value in it.

:func:`heat_grid` turns :func:`server.closing.reports.dining_matrix` (diners' unit × host
canteen) into rows and columns for ``reports/matrix.html``: each cell has its count and amount
as text (colour is never the only carrier of the value, WCAG 1.4.1), a level 0–5 that picks
its colour class (``heat-0`` … ``heat-5``, dark text on the light ones and white on the dark
ones, each pair at AA contrast), and whether the canteen is the diners' own unit's (not a
cross-unit meal). Levels split the largest amount in five equal steps; the legend says where.
"""

from __future__ import annotations

from typing import Any

LEVELS = 5


def level(amount_fen: int, top_fen: int) -> int:
    """0 for nothing; else 1..5 by fifths of ``top_fen`` (the largest cell reaches 5)."""
    if amount_fen <= 0 or top_fen <= 0:
        return 0
    return max(1, min(LEVELS, -(-amount_fen * LEVELS // top_fen)))


def heat_grid(
    matrix: dict[str, Any], units: dict[str, str], canteens: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Rows (diners' units) × columns (host canteens) with totals, levels and the legend."""
    cells = {(c["diner_unit_id"], c["canteen_id"]): c for c in matrix["cells"]}
    unit_ids = sorted({c["diner_unit_id"] for c in matrix["cells"]})
    canteen_ids = sorted({c["canteen_id"] for c in matrix["cells"]})
    top = max([0, *(c["amount_fen"] for c in matrix["cells"])])
    columns = [
        {
            "canteen_id": cid,
            "name": (canteens.get(cid) or {}).get("name") or cid,
            "host_unit_id": (canteens.get(cid) or {}).get("unit_id"),
            "count": sum(c["count"] for (_, k), c in cells.items() if k == cid),
            "amount_fen": sum(c["amount_fen"] for (_, k), c in cells.items() if k == cid),
        }
        for cid in canteen_ids
    ]
    rows = []
    for uid in unit_ids:
        row_cells = []
        for col in columns:
            c = cells.get((uid, col["canteen_id"]))
            amount = c["amount_fen"] if c else 0
            row_cells.append(
                {
                    "count": c["count"] if c else 0,
                    "amount_fen": amount,
                    "level": level(amount, top),
                    "own": col["host_unit_id"] == uid,
                }
            )
        rows.append(
            {
                "unit_id": uid,
                "unit_name": units.get(uid) or uid,
                "cells": row_cells,
                "count": sum(x["count"] for x in row_cells),
                "amount_fen": sum(x["amount_fen"] for x in row_cells),
                "cross_fen": sum(x["amount_fen"] for x in row_cells if not x["own"]),
            }
        )
    legend = [
        {"level": k, "from_fen": top * (k - 1) // LEVELS, "to_fen": top * k // LEVELS}
        for k in range(1, LEVELS + 1)
    ]
    return {"rows": rows, "columns": columns, "top_fen": top, "legend": legend}
