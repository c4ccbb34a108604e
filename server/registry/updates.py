"""Signed updates on the server: the bundles it holds, the offers, the terminals' reports.

* :func:`add_bundle` checks a bundle against the release key's public half (kept in the data
  folder by ``release-key-new``; the private half never needs to be on the server) — the
  signature and every file — before it keeps it in ``UPDATES_DIR`` and records it. A bundle
  the release key did not sign is never offered.
* :func:`offer` offers a bundle to one canteen's terminals or to the fleet, at a stage in
  percent (:func:`server.downstream.update_offers.in_stage` picks the terminals); offering it
  again with a wider stage widens the same offer. :func:`withdraw` takes it back. The
  server's :class:`~server.downstream.update_offers.OfferPublisher` sends each terminal its
  offers; terminals download the bundle over HTTP (``GET /api/v1/terminals/<id>/updates/…``,
  served only to a terminal it is offered to).
* :func:`record_report` keeps each report a terminal sends (once per message id);
  :func:`rollout` is the view per terminal: what it runs, what it is offered, what it said.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from server.downstream.update_offers import offers_by_terminal
from shared.errors import DomainError
from shared.protocol import UpdateReport
from shared.release import (
    MANIFEST_NAME,
    Manifest,
    open_bundle,
    parse_version,
    read_members,
    sha256_hex,
)

_STAGE = re.compile(r"([0-9]{1,3})%?")


def parse_stage(text: str) -> int:
    """``"5%"`` or ``"5"`` → 5: a whole percentage from 1 to 100."""
    m = _STAGE.fullmatch(text.strip())
    if not m or not 1 <= int(m.group(1)) <= 100:
        raise DomainError(
            "invalid_input",
            f"stage {text!r}: a whole percentage from 1% to 100%",
            zh=f"推送比例“{text}”须为 1% 到 100% 的整数",
        )
    return int(m.group(1))


def release_public_key(path: str | Path) -> str | None:
    """The release key's public half the server checks bundles with (None: none yet)."""
    try:
        return Path(path).read_text().strip() or None
    except FileNotFoundError:
        return None


def bundle_file_name(kind: str, version: str) -> str:
    parse_version(version)
    return f"{kind}-{version}.bundle"


def add_bundle(
    conn: sqlite3.Connection,
    folder: str | Path,
    data: bytes,
    public_key: str | None,
    now_ms: int,
) -> dict[str, Any]:
    """Check and keep a bundle; returns its record. ``public_key`` None skips the release
    signature check — only tests do that, to stand in for a compromised server."""
    if public_key is not None:
        manifest = open_bundle(data, public_key).manifest
    else:
        raw = read_members(data).get(MANIFEST_NAME)
        if raw is None:
            raise DomainError("update_malformed", "manifest.json missing")
        manifest = Manifest.from_bytes(raw)
    name = bundle_file_name(manifest.kind, manifest.version)
    record = {
        "kind": manifest.kind,
        "version": manifest.version,
        "min_version": manifest.min_version,
        "sha256": sha256_hex(data),
        "size": len(data),
        "file_name": name,
        "created_at_ms": manifest.created_at_ms,
    }
    row = conn.execute(
        "SELECT sha256 FROM update_bundles WHERE kind = ? AND version = ?", (manifest.kind, manifest.version)
    ).fetchone()
    if row is not None and row[0] != record["sha256"]:
        raise DomainError(
            "already_exists",
            f"another {manifest.kind} bundle {manifest.version} is already held: "
            "give the new one a new version",
        )
    target = Path(folder) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or sha256_hex(target.read_bytes()) != record["sha256"]:
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    if row is None:
        conn.execute(
            "INSERT INTO update_bundles(kind, version, min_version, sha256, size, file_name, "
            "created_at_ms, added_at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # positional: the PostgreSQL adapter's subset
            (
                *(record[k] for k in ("kind", "version", "min_version", "sha256", "size")),
                record["file_name"],
                record["created_at_ms"],
                now_ms,
            ),  # fmt: skip
        )
    return record


def offer(
    conn: sqlite3.Connection,
    kind: str,
    version: str,
    canteen_id: str | None,
    stage_pct: int,
    now_ms: int,
) -> dict[str, Any]:
    """Offer a held bundle to a canteen (``canteen_id``) or the fleet (None) at a stage;
    an active offer of the same bundle to the same terminals is widened (or narrowed)."""
    if (
        conn.execute(
            "SELECT 1 FROM update_bundles WHERE kind = ? AND version = ?", (kind, version)
        ).fetchone()
        is None
    ):
        raise DomainError("update_unknown", f"{kind} {version}")
    if (
        canteen_id is not None
        and conn.execute("SELECT 1 FROM canteens WHERE id = ?", (canteen_id,)).fetchone() is None
    ):
        raise DomainError("unknown_canteen", canteen_id)
    if not 1 <= stage_pct <= 100:
        raise DomainError(
            "invalid_input", f"stage {stage_pct}: 1 to 100 percent", zh=f"推送比例 {stage_pct} 须为 1 到 100"
        )
    row = conn.execute(
        "SELECT id FROM update_offers WHERE kind = ? AND version = ? "  # `IS ?`: SQLite only
        "AND coalesce(canteen_id, '') = coalesce(?, '') AND withdrawn_at_ms IS NULL",
        (kind, version, canteen_id),
    ).fetchone()
    if row is None:
        cur = conn.execute(
            "INSERT INTO update_offers(kind, version, canteen_id, stage_pct, offered_at_ms, updated_at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (kind, version, canteen_id, stage_pct, now_ms, now_ms),
        )
        offer_id = cur.lastrowid
    else:
        offer_id = row[0]
        conn.execute(
            "UPDATE update_offers SET stage_pct = ?, updated_at_ms = ? WHERE id = ?",
            (stage_pct, now_ms, offer_id),
        )
    chosen = [
        t
        for t, o in offers_by_terminal(conn).items()
        if any(b.kind == kind and b.version == version for b in o.offers)
    ]
    return {
        "offer_id": offer_id,
        "kind": kind,
        "version": version,
        "canteen_id": canteen_id,
        "stage_pct": stage_pct,
        "terminals": sorted(chosen),
    }


def withdraw(conn: sqlite3.Connection, kind: str, version: str, now_ms: int) -> int:
    """Take back every active offer of a bundle; returns how many there were."""
    cur = conn.execute(
        "UPDATE update_offers SET withdrawn_at_ms = ? "
        "WHERE kind = ? AND version = ? AND withdrawn_at_ms IS NULL",
        (now_ms, kind, version),
    )
    if cur.rowcount == 0:
        raise DomainError("update_unknown", f"no active offer of {kind} {version}")
    return cur.rowcount


def bundle_for(conn: sqlite3.Connection, folder: str | Path, terminal_id: str, name: str) -> Path:
    """The file of bundle ``<kind>-<version>`` if it is offered to ``terminal_id`` now."""
    kind, _, version = name.partition("-")
    offered = offers_by_terminal(conn).get(terminal_id)
    mine = offered.of_kind(kind) if offered is not None else None
    if mine is None or mine.version != version:
        raise DomainError("update_unknown", f"{name} is not offered to {terminal_id}")
    path = Path(folder) / bundle_file_name(kind, version)
    if not path.is_file():
        raise DomainError("update_unknown", f"{name}: the file is missing on the server")
    return path


def record_report(
    conn: sqlite3.Connection,
    terminal_id: str,
    msg_id: str,
    report: UpdateReport,
    sent_at_ms: int,
    now_ms: int,
) -> bool:
    """Keep a terminal's report (a copy of one already kept changes nothing)."""
    cur = conn.execute(
        "INSERT INTO update_reports(msg_id, terminal_id, kind, version, state, running, code, detail, "
        "sent_at_ms, received_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            msg_id,
            terminal_id,
            report.kind,
            report.version,
            report.state,
            report.running,
            report.code,
            report.detail,
            sent_at_ms,
            now_ms,
        ),
    )
    return cur.rowcount == 1


def last_reports(
    conn: sqlite3.Connection, terminal_id: str | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest report per (terminal, kind), by the terminal's send time."""
    rows = conn.execute(
        "SELECT terminal_id, kind, version, state, running, code, detail, sent_at_ms FROM update_reports "
        "WHERE ? IS NULL OR terminal_id = ? ORDER BY sent_at_ms, received_at_ms",
        (terminal_id, terminal_id),
    ).fetchall()
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        out[(r[0], r[1])] = {
            "version": r[2],
            "state": r[3],
            "running": r[4],
            "code": r[5],
            "detail": r[6],
            "at_ms": r[7],
        }
    return out


def rollout(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per terminal in service: the software its heartbeat names, what it is offered, and
    its last report of each kind."""
    offered = offers_by_terminal(conn)
    reports = last_reports(conn)
    out = []
    for terminal_id, canteen_id, status_json in conn.execute(
        "SELECT id, canteen_id, last_status_json FROM terminals WHERE state <> 'revoked' ORDER BY id"
    ):
        status = json.loads(status_json) if status_json else {}
        offer_ = offered.get(terminal_id)
        out.append(
            {
                "terminal_id": terminal_id,
                "canteen_id": canteen_id,
                "software": status.get("software") or None,
                "offered": {o.kind: o.version for o in offer_.offers} if offer_ else {},
                "reports": {
                    kind: reports[(terminal_id, kind)]
                    for kind in ("terminal", "firmware")
                    if (terminal_id, kind) in reports
                },
            }
        )
    return out


def bundles(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The bundles held and their active offers."""
    out = []
    for kind, version, min_version, sha, size, created in conn.execute(
        "SELECT kind, version, min_version, sha256, size, created_at_ms FROM update_bundles "
        "ORDER BY kind, added_at_ms"
    ).fetchall():
        offers = [
            {"canteen_id": r[0], "stage_pct": r[1], "offered_at_ms": r[2]}
            for r in conn.execute(
                "SELECT canteen_id, stage_pct, offered_at_ms FROM update_offers "
                "WHERE kind = ? AND version = ? AND withdrawn_at_ms IS NULL ORDER BY id",
                (kind, version),
            )
        ]
        out.append(
            {
                "kind": kind,
                "version": version,
                "min_version": min_version,
                "sha256": sha,
                "size": size,
                "created_at_ms": created,
                "offers": offers,
            }
        )
    return out
