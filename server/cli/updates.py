"""``canteen-server`` commands for signed updates (:mod:`server.registry.updates`).

* ``release-key-new [--out FILE]`` — a new Ed25519 release key: the private half to FILE
  (0600; keep it off the server, on the machine that builds releases), the public half into
  the data folder (the server checks bundles with it; ``provision-terminal`` pins it in each
  terminal's configuration).
* ``bundle-build --version V [--firmware] [--min-version M] [--key FILE] [--source DIR] OUT``
  — the signed bundle of the ``terminal/``, ``hardware/`` and ``shared/`` packages (or, with
  ``--firmware``, of the board's ``hardware/board/*.py``) from DIR (default: the code this
  server runs), with a manifest of every file's SHA-256.
* ``update-offer BUNDLE --canteen C | --fleet [--stage 5%]`` — check the bundle against the
  release key, keep it, and offer it; run it again with a wider ``--stage`` to widen.
* ``update-withdraw KIND VERSION`` and ``update-status [--json]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

import shared
from server.cli.output import JSON_OPTION, emit
from server.infra.db import write_txn
from server.registry import updates
from shared.clock import SystemClock, china_datetime
from shared.errors import DomainError
from shared.private_files import write_private
from shared.release import KIND_ROOTS, ReleaseKey, build_bundle, sha256_hex

SKIPPED_PARTS = frozenset({"__pycache__", "stubs"})


def default_key_path(home: str) -> Path:
    return Path(home) / "release" / "release_key.hex"


def collect_files(source: Path, kind: str) -> dict[str, bytes]:
    """The files a bundle of ``kind`` carries, from a source tree (the folder holding
    ``terminal/``, ``hardware/`` and ``shared/``): every ``.py`` file of the kind's packages
    (no caches, no type stubs); firmware: the board's own modules, flat."""
    files: dict[str, bytes] = {}
    if kind == "firmware":
        board = source / "hardware" / "board"
        for path in sorted(board.glob("*.py")):
            files[f"board/{path.name}"] = path.read_bytes()
    else:
        for root in KIND_ROOTS["terminal"]:
            for path in sorted((source / root).rglob("*.py")):
                rel = path.relative_to(source)
                if SKIPPED_PARTS.isdisjoint(rel.parts):
                    files[rel.as_posix()] = path.read_bytes()
    if not files:
        raise DomainError("invalid_input", f"no {kind} code under {source}")
    return files


@click.command("release-key-new")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the private key goes (0600). Default: <data folder>/release/release_key.hex.",
)
@click.pass_obj
def release_key_new(obj: Any, out_path: Path | None) -> None:
    """Make the release key that signs update bundles (发布密钥)."""
    out = out_path or default_key_path(obj.home)
    if out.exists():
        raise DomainError("already_exists", f"{out}: a release key is there already (move it away first)")
    public_file = Path(obj.app.config["RELEASE_PUBLIC_KEY_FILE"])
    key = ReleaseKey.generate()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_private(out, key.to_hex() + "\n")
    public_file.parent.mkdir(parents=True, exist_ok=True)
    public_file.write_text(key.public_hex + "\n")
    click.echo(f"发布私钥 release key (private, keep it offline): {out} (0600)")
    click.echo(f"发布公钥 release public key: {key.public_hex}")
    click.echo(f"  服务器据此校验更新包 the server checks bundles with it: {public_file}")
    click.echo("  新配置的终端会固定该公钥 provision-terminal pins it in new terminals' configuration")


@click.command("bundle-build")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--version", "version", required=True, help="The bundle's version, e.g. 1.4.0 (newer than what runs)."
)
@click.option("--min-version", default="0", show_default=True, help="The oldest version it may replace.")
@click.option(
    "--firmware", is_flag=True, help="The peripheral board's firmware instead of the terminal software."
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The release key (private). Default: <data folder>/release/release_key.hex.",
)
@click.option(
    "--source",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The source tree holding terminal/, hardware/, shared/. Default: the code this server runs.",
)
@JSON_OPTION
@click.pass_obj
def bundle_build(
    obj: Any,
    out: Path,
    version: str,
    min_version: str,
    firmware: bool,
    key_path: Path | None,
    source: Path | None,
    as_json: bool,
) -> None:
    """Build and sign an update bundle (更新包) with a manifest of every file's SHA-256."""
    key_file = key_path or default_key_path(obj.home)
    if not key_file.is_file():
        raise DomainError("release_key_missing", str(key_file))
    key = ReleaseKey.from_hex(key_file.read_text().strip())
    kind = "firmware" if firmware else "terminal"
    tree = source or Path(shared.__file__).resolve().parent.parent
    files = collect_files(tree, kind)
    data = build_bundle(kind, version, files, key, SystemClock().now_ms(), min_version)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    info = {
        "kind": kind,
        "version": version,
        "min_version": min_version,
        "files": len(files),
        "size": len(data),
        "sha256": sha256_hex(data),
        "path": str(out),
    }
    emit(
        info,
        as_json,
        [
            f"更新包 bundle: {out} ({kind} {version}, 最低可替换 min {min_version})",
            f"  {len(files)} 个文件 files, {len(data)} 字节 bytes, sha256 {info['sha256']}",
        ],
    )


@click.command("update-offer")
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--canteen", "canteen_id", default=None, help="Offer it to this canteen's terminals.")
@click.option("--fleet", is_flag=True, help="Offer it to every terminal (with --stage: a share of them).")
@click.option(
    "--stage", default="100%", show_default=True, help="The share of the terminals chosen, e.g. 5%."
)
@JSON_OPTION
@click.pass_obj
def update_offer(
    obj: Any, bundle: Path, canteen_id: str | None, fleet: bool, stage: str, as_json: bool
) -> None:
    """Check a bundle against the release key and offer it (更新下发); again to widen the stage."""
    if fleet == (canteen_id is not None):
        raise click.UsageError("--canteen C 或 --fleet 二选一 (give exactly one of --canteen C and --fleet)")
    stage_pct = updates.parse_stage(stage)
    public_key = updates.release_public_key(obj.app.config["RELEASE_PUBLIC_KEY_FILE"])
    if public_key is None:
        raise DomainError("release_key_missing", "the server has no release public key: run release-key-new")
    conn = obj.db()
    now = SystemClock().now_ms()
    data = bundle.read_bytes()
    with write_txn(conn):
        record = updates.add_bundle(conn, obj.app.config["UPDATES_DIR"], data, public_key, now)
        result = updates.offer(conn, record["kind"], record["version"], canteen_id, stage_pct, now)
    scope = f"食堂 canteen {canteen_id}" if canteen_id else "全部终端 the fleet"
    emit(
        result,
        as_json,
        [
            f"已下发 offered: {record['kind']} {record['version']} → {scope}, {stage_pct}%",
            f"  选中终端 terminals chosen: {len(result['terminals'])}"
            + (
                f" ({', '.join(result['terminals'][:20])}{' …' if len(result['terminals']) > 20 else ''})"
                if result["terminals"]
                else ""
            ),
            "  运行中的服务器将通过 MQTT 通知这些终端 the running server tells them over MQTT",
        ],
    )


@click.command("update-withdraw")
@click.argument("kind", type=click.Choice(sorted(KIND_ROOTS)))
@click.argument("version")
@click.pass_obj
def update_withdraw(obj: Any, kind: str, version: str) -> None:
    """Take back every offer of a bundle (terminals that installed it keep it)."""
    conn = obj.db()
    with write_txn(conn):
        n = updates.withdraw(conn, kind, version, SystemClock().now_ms())
    click.echo(f"已撤回 withdrawn: {kind} {version} ({n} offer(s))")


@click.command("update-status")
@JSON_OPTION
@click.pass_obj
def update_status(obj: Any, as_json: bool) -> None:
    """The bundles held and offered, and per terminal: what it runs, is offered, reported."""
    conn = obj.db()
    data = {"bundles": updates.bundles(conn), "terminals": updates.rollout(conn)}
    when = lambda ms: china_datetime(ms).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"  # noqa: E731
    lines = []
    for b in data["bundles"]:
        offers = (
            "; ".join(f"{o['canteen_id'] or '全部 fleet'} {o['stage_pct']}%" for o in b["offers"])
            or "未下发 not offered"
        )
        lines.append(f"更新包 bundle {b['kind']} {b['version']} (min {b['min_version']}): {offers}")
    for t in data["terminals"]:
        offered = ", ".join(f"{k} {v}" for k, v in sorted(t["offered"].items())) or "-"
        lines.append(
            f"终端 {t['terminal_id']} 食堂 {t['canteen_id']} "
            f"软件 software {t['software'] or '-'} 下发 offered {offered}"
        )
        for kind, r in sorted(t["reports"].items()):
            why = f" [{r['code']}]" if r["code"] else ""
            lines.append(f"  {kind} {r['version']}: {r['state']}{why} {when(r['at_ms'])}")
    emit(data, as_json, lines or ["无更新 no updates"])


COMMANDS = [release_key_new, bundle_build, update_offer, update_withdraw, update_status]
