"""``canteen-server qr …``: QR payment codes from the command line (registered in server.cli).

* ``qr CARD`` prints a fresh payment code as a QR drawing in the terminal and saves it as a
  PNG — the stand-in for the diner's phone (it issues a credential first if the holder has
  none).
* ``qr-issue CARD`` issues a new credential and prints the link of the diner's phone page, on
  the server's public address: ``--base-url``, else ``PUBLIC_URL`` (``CANTEEN_PUBLIC_URL``,
  config.py, ``init --public-url``); with neither it refuses rather than print a link to
  localhost that no phone can open.
* ``qr-incidents`` lists codes and SUN messages spent twice.
"""

from __future__ import annotations

from typing import Any

import click

from server.cli.output import JSON_OPTION, emit
from server.infra import public_url
from server.infra.db import write_txn
from server.sales import qr_codes
from server.sales.incidents import incidents
from server.sales.qr_render import ascii_art, save_png
from shared.clock import SystemClock
from shared.money import format_fen


@click.command("qr")
@click.argument("card_id")
@click.option(
    "--png", "png_path", default="qr-code.png", show_default=True, help="Where to save the code as PNG."
)
@click.option(
    "--days",
    default=qr_codes.DEFAULT_VALID_DAYS,
    show_default=True,
    help="Validity of a newly issued credential.",
)
@click.option(
    "--allowance",
    "allowance_fen",
    default=qr_codes.DEFAULT_OFFLINE_ALLOWANCE_FEN,
    show_default=True,
    help="Offline allowance (fen) of a newly issued credential.",
)
@JSON_OPTION
@click.pass_obj
def qr_code(obj: Any, card_id: str, png_path: str, days: int, allowance_fen: int, as_json: bool) -> None:
    """Show a payment code for CARD_ID (valid 60 s) as text art and a PNG."""
    conn = obj.db()
    secret = qr_codes.qr_secret(obj.app.extensions["canteen_server_key"])
    now = SystemClock().now_ms()
    with write_txn(conn):
        cred = qr_codes.current_for_card(conn, card_id, now)
        if cred is None:
            cred = qr_codes.issue(
                conn, secret, card_id, now, valid_days=days, offline_allowance_fen=allowance_fen
            )
        code, cred = qr_codes.next_code(conn, secret, cred.id, now)
    save_png(code, png_path)
    data = {
        "code": code,
        "png": png_path,
        "credential_id": cred.id,
        "valid_until_ms": now - now % 1000 + 60_000,
    }
    text = ascii_art(code) + f"{code}\n付款码 60 秒内有效 / valid for 60 s — PNG: {png_path}"
    emit(data, as_json, text)


@click.command("qr-issue")
@click.argument("card_id")
@click.option("--days", default=qr_codes.DEFAULT_VALID_DAYS, show_default=True, help="Validity in days.")
@click.option(
    "--allowance",
    "allowance_fen",
    default=qr_codes.DEFAULT_OFFLINE_ALLOWANCE_FEN,
    show_default=True,
    help="Offline allowance in fen.",
)
@click.option(
    "--base-url",
    default=None,
    help="The server as phones reach it, e.g. https://canteen.example.gov.cn "
    "(default: PUBLIC_URL / CANTEEN_PUBLIC_URL, set by `init --public-url`).",
)
@JSON_OPTION
@click.pass_obj
def qr_issue(
    obj: Any, card_id: str, days: int, allowance_fen: int, base_url: str | None, as_json: bool
) -> None:
    """Issue a QR payment credential for CARD_ID's holder and print the phone page link."""
    base_url = public_url.check(base_url or obj.app.config.get("PUBLIC_URL") or "")  # before any change
    conn = obj.db()
    secret = qr_codes.qr_secret(obj.app.extensions["canteen_server_key"])
    with write_txn(conn):
        cred = qr_codes.issue(
            conn,
            secret,
            card_id,
            SystemClock().now_ms(),
            valid_days=days,
            offline_allowance_fen=allowance_fen,
        )
    url = f"{base_url}/qr/{cred.id}/{qr_codes.page_access(secret, cred.id)}"
    text = (
        ascii_art(url)
        + f"手机扫此码打开付款页 / scan with the phone: {url}\n"
        + f"离线额度 offline allowance {format_fen(cred.offline_allowance_fen)}"
    )
    emit({**cred.to_json(), "page_url": url}, as_json, text)


@click.command("qr-incidents")
@click.option("--since-ms", default=0, show_default=True, help="Only incidents at or after this time.")
@JSON_OPTION
@click.pass_obj
def qr_incidents(obj: Any, since_ms: int, as_json: bool) -> None:
    """List QR codes and NFC SUN messages spent twice (and codes the server could not verify)."""
    rows = incidents(obj.db(), since_ms)
    lines = [
        f"[{r['kind']}] {r['sale']} (first {r['first_sale']}) holder {r['holder_id']} "
        f"{format_fen(r['amount_fen'])}: {r['action']}"
        for r in rows
    ]
    emit(rows, as_json, "\n".join(lines) or "无异常 no incidents")


COMMANDS = [qr_code, qr_issue, qr_incidents]
