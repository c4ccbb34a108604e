"""Software updates (admin): the signed bundles the server holds, where each is offered, and
per terminal what it runs, what it is offered and what it last reported — the page form of
``canteen-server update-status`` (:func:`server.registry.updates.bundles` and
:func:`~server.registry.updates.rollout`). Offering and withdrawing stay CLI commands: they
need the release key's bundle file, which is not uploaded through a browser."""

from __future__ import annotations

from typing import Any

from flask import render_template

from server.infra.db_flask import get_db
from server.registry import updates
from server.web.blueprint import web_blueprint
from server.web.guard import page

bp = web_blueprint("web_updates", __name__)

KIND_ZH = {"terminal": "终端软件", "firmware": "外设固件"}
STATE_ZH = {
    "installed": "已安装，等待空闲时切换",
    "running": "已切换，试运行中",
    "refused": "拒绝安装",
    "failed": "安装失败",
    "rolled_back": "已回退",
}


def _terminal_rows(rollout: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for t in rollout:
        reports = [
            {**r, "kind_zh": KIND_ZH.get(kind, kind), "state_zh": STATE_ZH.get(r["state"], r["state"])}
            for kind, r in sorted(t["reports"].items())
        ]
        offered = [f"{KIND_ZH.get(k, k)} {v}" for k, v in sorted(t["offered"].items())]
        trouble = any(r["state"] in ("refused", "failed", "rolled_back") for r in reports)
        rows.append({**t, "reports_zh": reports, "offered_zh": offered, "trouble": trouble})
    return rows


@bp.get("/updates")
@page("admin")
def rollout() -> str:
    conn = get_db()
    held = [{**b, "kind_zh": KIND_ZH.get(b["kind"], b["kind"])} for b in updates.bundles(conn)]
    terminals = _terminal_rows(updates.rollout(conn))
    return render_template(
        "registry/updates.html",
        bundles=held,
        terminals=terminals,
        trouble=sum(1 for t in terminals if t["trouble"]),
    )
