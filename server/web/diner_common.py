"""What every page of the diner's portal shares: who the diner is (their own cardholder row,
through the API's scope check — a diner sees only themselves), their card, and the portal's
tabs (drawn by ``web/diner_macros.html``)."""

from __future__ import annotations

import sqlite3

from server.infra.scope import principal, require_holder_access

# the portal's tabs: (endpoint, label), in the order a phone shows them
TABS = (
    ("web_diner.home", "账户"),
    ("web_diner_pay.pay_code", "付款码"),
    ("web_diner_topup.topup", "充值"),
    ("web_diner_card.card", "卡与密码"),
    ("web_directory.directory", "食堂"),
)


def me(conn: sqlite3.Connection) -> sqlite3.Row:
    """The signed-in diner's cardholder row (the principal's own holder, scope-checked)."""
    return require_holder_access(conn, principal().holder_id or "")


def cards_of(conn: sqlite3.Connection, holder_id: str) -> list[sqlite3.Row]:
    """The holder's cards, the newest first."""
    return conn.execute(
        "SELECT card_id, status, changed_at_ms, replaced_by FROM cards WHERE holder_id = ? "
        "ORDER BY coalesce(changed_at_ms, 0) DESC, rowid DESC",
        (holder_id,),
    ).fetchall()


def active_card(conn: sqlite3.Connection, holder_id: str) -> str | None:
    """The card the holder pays with now (the newest active one), or None."""
    return next((c["card_id"] for c in cards_of(conn, holder_id) if c["status"] == "active"), None)


def masked(card_id: str) -> str:
    """A card number as shown on a screen others may see: ``K0****01``."""
    return card_id if len(card_id) <= 4 else card_id[:2] + "****" + card_id[-2:]
