"""``canteen-server faces ...``: enroll, list and delete faces; evaluate the face policy.

Registered on the main ``canteen-server`` group by :mod:`server.cli`. Domain errors (no
face, two faces, unknown holder …) become the main group's clear message and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hardware.face_engine import DlibFaceEngine
from server.cli.output import JSON_OPTION, emit
from server.infra.db import get_setting, write_txn
from server.sales import faces as svc
from server.sales.face_evaluate import evaluate as run
from server.sales.face_evaluate import render
from shared.clock import SystemClock
from shared.errors import DomainError
from shared.face_match import FacePolicy


def _policy(obj: Any, threshold: int | None, margin: int | None, confident: int | None):  # noqa: ANN202
    """The face policy configured on this server (``terminal_settings.face``) — in whatever
    database the data folder's configuration names, SQLite file or PostgreSQL — with any
    command-line overrides. A folder without a database evaluates the defaults and is left
    as it was (no folder, no database created)."""
    config: dict[str, Any] = {}
    try:
        conn = obj.db()
    except DomainError as exc:
        if exc.code != "no_database":
            raise
    else:
        try:
            config = json.loads(get_setting(conn, "terminal_settings", "{}") or "{}").get("face", {})
        finally:
            conn.close()
    overrides = {"threshold_milli": threshold, "margin_milli": margin, "confident_milli": confident}
    config.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return FacePolicy.from_config(config)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group()
def faces() -> None:
    """Face pay: enroll photos, withdraw faces, evaluate the match policy (人脸支付)."""


@faces.command()
@click.argument("holder_id")
@click.argument("photo", type=click.Path(exists=True, dir_okay=False))
@JSON_OPTION
@click.pass_obj
def enroll(obj: Any, holder_id: str, photo: str, as_json: bool) -> None:
    """Enroll HOLDER_ID's face from PHOTO (exactly one face; the photo is not kept)."""
    analyzed = svc.analyze_photo(DlibFaceEngine(), photo)
    conn = obj.db()
    with write_txn(conn):
        face_id = svc.enroll(conn, holder_id, analyzed, SystemClock().now_ms(), by="cli")
    data = {"holder_id": holder_id, "face_id": face_id, "face_px": analyzed.face_px}
    emit(data, as_json, f"已登记 enrolled: {holder_id} face {face_id} ({analyzed.face_px} px)")


@faces.command("list")
@click.argument("holder_id")
@JSON_OPTION
@click.pass_obj
def list_cmd(obj: Any, holder_id: str, as_json: bool) -> None:
    """List HOLDER_ID's enrolled faces (ids and dates, never the encodings)."""
    rows = svc.list_faces(obj.db(), holder_id)
    text = "\n".join(f"{r['face_id']}  {r['face_px']} px  {r['enrolled_at_ms']}" for r in rows) or "无 none"
    emit(rows, as_json, text)


@faces.command()
@click.argument("holder_id")
@click.option("--face-id", default=None, help="Delete only this face (default: all of the holder's).")
@JSON_OPTION
@click.pass_obj
def delete(obj: Any, holder_id: str, face_id: str | None, as_json: bool) -> None:
    """Withdraw HOLDER_ID's faces: deleted on the server and on every terminal."""
    conn = obj.db()
    with write_txn(conn):
        n = svc.withdraw(conn, holder_id, SystemClock().now_ms(), face_id=face_id, by="cli")
    emit({"holder_id": holder_id, "deleted": n}, as_json, f"已删除 deleted: {n}")


@faces.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--threshold-milli", type=int, default=None, help="Override the threshold (thousandths).")
@click.option("--margin-milli", type=int, default=None, help="Override the margin (thousandths).")
@click.option(
    "--confident-milli", type=int, default=None, help="Override the no-second-factor bound (thousandths)."
)
@JSON_OPTION
@click.pass_obj
def evaluate(
    obj: Any,
    folder: str,
    threshold_milli: int | None,
    margin_milli: int | None,
    confident_milli: int | None,
    as_json: bool,
) -> None:
    """Enroll the first photo of each person in FOLDER (<person>_<n>.<ext>), probe with the
    rest: genuine/impostor distances, false accepts and false rejects at the policy."""
    report = run(DlibFaceEngine(), Path(folder), _policy(obj, threshold_milli, margin_milli, confident_milli))
    emit(report, as_json, render(report))
