"""``canteen-server`` commands for people: the roster, cards, leavers and refunds.

Refunds exist only for staff who left, only to their own registered bank account, and only
after an administrator approves (``refund approve``) — there is no cash path (不得提现).
"""

from __future__ import annotations

import getpass
from typing import Any

import click

from server.cli.output import JSON_OPTION, emit
from server.cli.registry import now_ms, read_file, run_import
from server.infra.db import write_txn
from server.registry import cards, leavers, pins, roster
from server.registry.canteen_config import MEAL_NAMES_ZH
from server.registry.holders import holder_change
from server.registry.people import find_holders, get_holder, holder_json, resolve_holder
from server.sales.history import holder_history
from shared.clock import china_datetime
from shared.money import format_fen


@click.command("import-roster")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--unit", "unit_id", default=None, help="Refuse rows of any other unit (a clerk's file).")
@click.option("--dry-run", is_flag=True, help="Check the file and report; write nothing.")
@JSON_OPTION
@click.pass_obj
def import_roster(obj: Any, file: str, unit_id: str | None, dry_run: bool, as_json: bool) -> None:
    """Import a staff roster (单位名称, 姓名, 工号, 卡号[, 银行卡号]) — all or nothing.

    Creates cardholders and cards; re-importing updates names and cards and never
    duplicates. Errors are listed by line number and nothing is applied.
    """
    data = read_file(file)
    run_import(
        obj,
        as_json,
        lambda conn: roster.import_roster(conn, data, now_ms(), unit_scope=unit_id, dry_run=dry_run),
        lambda r: _roster_text(r, dry_run),
    )


def _roster_text(r: dict[str, Any], dry_run: bool) -> list[str]:
    """The counts, then one line per holder created or changed, with the id other commands take."""
    lines = [
        ("（试运行 dry run）" if dry_run else "")
        + f"行 rows {r['rows']}: 新增 new {r['new_holders']}, 改名 renamed {r['renamed']}, "
        f"未变 unchanged {r['unchanged']}, 发卡 cards issued {r['issued']}, 停用 retired {r['retired']}"
    ]
    for h in r["holders"]:
        card = f" 卡号 card {h['card_id']}" if h["card_id"] else ""
        what = "新增 new" if h["created"] else "更新 updated"
        lines.append(f"  {what} {h['id']} {h['name']} 工号 {h['staff_no']}{card}")
    return lines


# -- cardholders ------------------------------------------------------------------------------


@click.group()
def holder() -> None:
    """Cardholders: find, show, leave, record their own bank account."""


def _holder_text(conn: Any, holder_id: str) -> tuple[dict[str, Any], str]:
    data = holder_json(conn, get_holder(conn, holder_id))
    cards_text = ", ".join(f"{c['card_id']}({c['status']})" for c in data["cards"]) or "-"
    text = (
        f"{data['id']} {data['name']} {data['unit_id']}/{data['staff_no']} {data['status']}"
        f"{' 已冻结 blocked' if data['blocked'] else ''}\n"
        f"  补贴 subsidy {format_fen(data['subsidy_fen'])}  自费 self {format_fen(data['self_fen'])}"
        f"  卡 cards {cards_text}"
    )
    if data["bank_account_changes"]:
        text += "\n  银行账户变更 bank account changes:" + "".join(
            "\n    " + _account_change_line(c) for c in data["bank_account_changes"]
        )
    return data, text


def _account_change_line(c: dict[str, Any]) -> str:
    old = c["old_masked"] or "（无 none）"
    return f"{china_datetime(c['at_ms']):%Y-%m-%d %H:%M} {c['changed_by']}: {old} → {c['new_masked']}"


def cli_actor() -> str:
    """Who acts at the server's console: 'cli:<login name>' (two approvals of one refund
    need two different people, so two different logins)."""
    return f"cli:{getpass.getuser()}"


@holder.command("show")
@click.argument("holder")
@click.option("--unit", "unit_id", default=None, help="The unit, when a 工号 is used in several.")
@JSON_OPTION
@click.pass_obj
def holder_show(obj: Any, holder: str, unit_id: str | None, as_json: bool) -> None:
    """A cardholder's purses, cards and status. HOLDER: holder id (H000001), card number or 工号."""
    conn = obj.db()
    data, text = _holder_text(conn, resolve_holder(conn, holder, unit_id)["id"])
    emit(data, as_json, text)


def _found_line(h: dict[str, Any]) -> str:
    cards_text = ", ".join(
        c["card_id"] + ("" if c["status"] == "active" else f"({c['status']})") for c in h["cards"]
    )
    status = "在职 active" if h["status"] == "active" else "离职 left"
    return f"{h['id']}\t{h['name']}\t{h['unit_id']}/{h['staff_no']}\t{status}\t卡 cards {cards_text or '-'}"


@holder.command("history")
@click.argument("holder")
@click.option("--unit", "unit_id", default=None, help="The unit, when a 工号 is used in several.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500), help="How many sales.")
@JSON_OPTION
@click.pass_obj
def holder_history_cmd(obj: Any, holder: str, unit_id: str | None, limit: int, as_json: bool) -> None:
    """A cardholder's sales (消费记录), newest first, with each reversal (冲正) under the
    sale it gave back. HOLDER: holder id, card number or 工号."""
    conn = obj.db()
    data = holder_history(conn, resolve_holder(conn, holder, unit_id)["id"], limit)
    lines = []
    for s in data:
        what = MEAL_NAMES_ZH.get(s["meal_period"] or "", "超市") if s["kind"] == "meal" else "超市"
        lines.append(
            f"{china_datetime(s['occurred_at_ms']):%Y-%m-%d %H:%M}  {s['canteen_id']}  {what}  "
            f"{format_fen(s['amount_fen'])}  补贴 subsidy {format_fen(s['subsidy_fen'])}  "
            f"自费 self {format_fen(s['self_fen'])}  {s['terminal_id']}/{s['seq']}"
        )
        r = s["reversal"]
        if r is not None:
            lines.append(
                f"    已冲正 reversed {china_datetime(r['occurred_at_ms']):%H:%M}  "
                f"+{format_fen(r['amount_fen'])}  (补贴 {format_fen(r['subsidy_fen'])} / "
                f"自费 {format_fen(r['self_fen'])})  {r['id']}"
            )
    emit(data, as_json, lines or "(无消费 no sales)")


@holder.command("find")
@click.argument("text")
@click.option("--unit", "unit_id", default=None, help="Only this unit's cardholders (e.g. U0001).")
@JSON_OPTION
@click.pass_obj
def holder_find(obj: Any, text: str, unit_id: str | None, as_json: bool) -> None:
    """Find cardholders by name (or part of it), 工号 or card number."""
    conn = obj.db()
    data = [holder_json(conn, row) for row in find_holders(conn, text, unit_id)]
    lines = [_found_line(h) for h in data]
    emit(data, as_json, lines or "(未找到 none found)")


@holder.command("leave")
@click.argument("holder_id")
@JSON_OPTION
@click.pass_obj
def holder_leave(obj: Any, holder_id: str, as_json: bool) -> None:
    """Record that a cardholder left: cards retired, subsidy back to the unit, self purse kept."""
    conn = obj.db()
    with write_txn(conn):
        r = leavers.leave(conn, holder_id, now_ms())
    emit(
        r,
        as_json,
        f"{holder_id}: 补贴退回单位 subsidy returned to {r['unit_id']} "
        f"{format_fen(r['subsidy_returned_fen'])}; 自费保留 self purse kept {format_fen(r['self_fen'])}",
    )


@holder.command("set-bank")
@click.argument("holder_id")
@click.argument("bank_account")
@click.pass_obj
def holder_set_bank(obj: Any, holder_id: str, bank_account: str) -> None:
    """Record the person's own bank account (建行储蓄卡), the only place a refund may go."""
    conn = obj.db()
    with write_txn(conn):
        account = leavers.set_bank_account(
            conn, holder_id, bank_account, now_ms=now_ms(), changed_by=cli_actor()
        )
    click.echo(f"{holder_id}: {leavers.mask(account)}")


@holder.command("pin-set")
@click.argument("holder")
@click.option("--unit", "unit_id", default=None, help="The holder's unit, when HOLDER is a 工号.")
@click.pass_obj
def holder_pin_set(obj: Any, holder: str, unit_id: str | None) -> None:
    """Set or reset a cardholder's 6-digit payment PIN (支付密码, for sales above the
    no-PIN limit). The cardholder types it twice at the prompt; it is never shown or
    echoed. Clears the wrong tries and any lock. HOLDER: holder id, card number or 工号."""
    conn = obj.db()
    holder_id = resolve_holder(conn, holder, unit_id)["id"]
    pin = click.prompt(
        "新支付密码（6位数字）new PIN",
        hide_input=True,
        confirmation_prompt="再次输入 repeat",
        prompt_suffix=": ",
    )
    with write_txn(conn):
        pins.set_pin(conn, holder_id, pin, now_ms(), cli_actor())
    click.echo(f"{holder_id}: 支付密码已设置 PIN set")


# -- cards ------------------------------------------------------------------------------------


@click.group()
def card() -> None:
    """Cards: report lost, found, replace."""


def _card_line(c: dict[str, Any]) -> str:
    return f"{c['card_id']} → {c['holder_id']} {c['status']}" + (
        f" (replaced by {c['replaced_by']})" if c["replaced_by"] else ""
    )


@card.command("lost")
@click.argument("card_id")
@JSON_OPTION
@click.pass_obj
def card_lost(obj: Any, card_id: str, as_json: bool) -> None:
    """Report a card lost (挂失): terminals refuse it from the next delta on."""
    conn = obj.db()
    with write_txn(conn):
        c = cards.report_lost(conn, card_id, now_ms())
    emit(c, as_json, _card_line(c))


@card.command("found")
@click.argument("card_id")
@JSON_OPTION
@click.pass_obj
def card_found(obj: Any, card_id: str, as_json: bool) -> None:
    """A lost card turned up before it was replaced: it works again."""
    conn = obj.db()
    with write_txn(conn):
        c = cards.report_found(conn, card_id, now_ms())
    emit(c, as_json, _card_line(c))


@card.command("replace")
@click.argument("old_card_id")
@click.argument("new_card_id")
@JSON_OPTION
@click.pass_obj
def card_replace(obj: Any, old_card_id: str, new_card_id: str, as_json: bool) -> None:
    """Issue NEW_CARD_ID to the holder of OLD_CARD_ID (补卡); both purses carry over."""
    conn = obj.db()
    with write_txn(conn):
        now = now_ms()
        c = cards.replace(conn, old_card_id, new_card_id, now)
        change = holder_change(conn, c["holder_id"], now)
    emit(
        c,
        as_json,
        _card_line(c)
        + f"  补贴 subsidy {format_fen(change['subsidy_fen'])} 自费 self {format_fen(change['self_fen'])}",
    )


# -- refunds ----------------------------------------------------------------------------------


@click.group()
def refund() -> None:
    """Refunds of a leaver's self purse to their own bank account (admin approves)."""


def _refund_line(r: dict[str, Any]) -> str:
    amount = (
        format_fen(r["amount_fen"]) if r["amount_fen"] is not None else f"(now {format_fen(r['self_fen'])})"
    )
    line = f"#{r['id']} {r['holder_id']} {r['status']} {amount} → {r['bank_account']}" + (
        f" — {r['reason']}" if r["reason"] else ""
    )
    if r["second_approval_needed"]:
        line += (
            "\n  账户近期变更，需两位管理员审批 account changed recently: two administrators must approve"
            + (f"（已由 first approved by {r['first_approved_by']}）" if r["first_approved_by"] else "")
        )
    if r["account_changes"]:
        line += "".join("\n  " + _account_change_line(c) for c in r["account_changes"])
    return line


@refund.command("request")
@click.argument("holder_id")
@click.option("--bank-account", default=None, help="The person's own account, if not registered yet.")
@JSON_OPTION
@click.pass_obj
def refund_request(obj: Any, holder_id: str, bank_account: str | None, as_json: bool) -> None:
    """Ask for a leaver's self purse to be paid to their own bank account."""
    conn = obj.db()
    with write_txn(conn):
        r = leavers.request_refund(conn, holder_id, now_ms(), cli_actor(), bank_account=bank_account)
    emit(r, as_json, _refund_line(r))


@refund.command("approve")
@click.argument("request_id", type=int)
@JSON_OPTION
@click.pass_obj
def refund_approve(obj: Any, request_id: int, as_json: bool) -> None:
    """Approve: the whole self purse goes to the registered own bank account."""
    conn = obj.db()
    with write_txn(conn):
        r = leavers.approve_refund(conn, request_id, now_ms(), cli_actor())
    emit(r, as_json, _refund_line(r))


@refund.command("reject")
@click.argument("request_id", type=int)
@click.option("--reason", required=True, help="Why (shown to the clerk).")
@JSON_OPTION
@click.pass_obj
def refund_reject(obj: Any, request_id: int, reason: str, as_json: bool) -> None:
    """Reject a refund request."""
    conn = obj.db()
    with write_txn(conn):
        r = leavers.reject_refund(conn, request_id, now_ms(), cli_actor(), reason)
    emit(r, as_json, _refund_line(r))


@refund.command("list")
@click.option("--status", type=click.Choice(["pending", "approved", "rejected"]), default=None)
@JSON_OPTION
@click.pass_obj
def refund_list(obj: Any, status: str | None, as_json: bool) -> None:
    """Refund requests, oldest first."""
    data = leavers.list_requests(obj.db(), status=status, now_ms=now_ms())
    emit(data, as_json, "\n".join(_refund_line(r) for r in data) or "(none)")


COMMANDS = [import_roster, holder, card, refund]
