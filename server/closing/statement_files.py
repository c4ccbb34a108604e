"""Settlement documents as files: the statement CSV (结算单) and the payout file (付款清单).

Both are UTF-8 CSV with a BOM (so a spreadsheet on a Chinese desktop opens them right) and
Chinese headers, written by :func:`server.infra.csv_safe.write_csv` (text from canteen
tables and payee details cannot start a spreadsheet formula). Amounts appear twice: integer
fen (for machines and the bank import) and ``¥12.50`` (for people), from the one formatter.
The rows are laid out once (:func:`statement_rows`, :func:`payout_rows`); the web console
writes the same rows as Excel through :mod:`server.infra.xlsx_safe`.
"""

from __future__ import annotations

from typing import Any

from server.books.settlement_rules import payee_nets, payee_payouts
from server.infra.csv_safe import Number, write_csv
from shared.money import format_fen

STATEMENT_HEADERS = [
    "季度",
    "类型",
    "日期",
    "原属季度",
    "食堂编号",
    "食堂名称",
    "所属单位",
    "经营者",
    "自营",
    "笔数",
    "消费金额(分)",
    "质量评分",
    "支付比例(%)",
    "质量扣款(分)",
    "结算金额(分)",
    "系统管理费(分)",
    "应付金额(分)",
    "消费金额",
    "质量扣款",
    "结算金额",
    "系统管理费",
    "应付金额",
]
PAYOUT_HEADERS = ["收款人", "收款单位全称", "开户银行", "银行账号", "金额(分)", "金额", "食堂", "备注"]


# the columns that repeat an amount for people: yuan (``¥12.50``) in the CSV, a yuan number
# shown ``¥12.50`` in Excel; the "(分)" columns beside them hold integer fen for machines
STATEMENT_YUAN_COLUMNS = frozenset(range(17, 22))
PAYOUT_YUAN_COLUMNS = frozenset({5})


def _yuan(amount_fen: int) -> Number:
    """``¥12.50`` / ``-¥1.50``: ours, a number, so the CSV writer leaves its sign alone."""
    return Number(format_fen(amount_fen))


def as_csv(headers: list[str], rows: list[list[Any]], yuan_columns: frozenset[int]) -> str:
    """Rows of :func:`statement_rows` / :func:`payout_rows` as CSV: yuan columns as ``¥12.50``."""
    return write_csv(
        headers,
        (
            [_yuan(v) if i in yuan_columns and isinstance(v, int) else v for i, v in enumerate(r)]
            for r in rows
        ),
    )


def statement_rows(doc: dict[str, Any]) -> list[list[Any]]:
    """One 结算 row per canteen, followed by its 调整 (adjustment) rows; amounts in integer
    fen, the yuan columns (:data:`STATEMENT_YUAN_COLUMNS`) too, for the writer to show."""
    rows: list[list[Any]] = []
    for st in doc["statements"]:
        common = [
            st["canteen_id"],
            st["canteen_name"],
            st["unit_id"],
            st["operator"],
            "是" if st["self_operated"] else "否",
        ]
        rows.append(
            [
                doc["quarter"],
                "结算",
                "",
                doc["quarter"],
                *common,
                st["sales_count"],
                st["gross_fen"],
                "" if st["quality_score"] is None else st["quality_score"],
                st["pay_pct"],
                st["withheld_fen"],
                st["settlement_fen"],
                st["fee_fen"],
                st["net_fen"],
                st["gross_fen"],
                st["withheld_fen"],
                st["settlement_fen"],
                st["fee_fen"],
                st["net_fen"],
            ]
        )
        for adj in st["adjustments"]:
            rows.append(
                [
                    doc["quarter"],
                    "调整",
                    adj["date"],
                    adj["quarter"],
                    *common,
                    adj["count"],
                    adj["amount_fen"],
                    "",
                    adj["pay_pct"],
                    adj["withheld_fen"],
                    "",
                    "",
                    "",
                    adj["amount_fen"],
                    adj["withheld_fen"],
                    "",
                    "",
                    "",
                ]
            )
    return rows


def statement_csv(doc: dict[str, Any]) -> str:
    return as_csv(STATEMENT_HEADERS, statement_rows(doc), STATEMENT_YUAN_COLUMNS)


def payout_lines(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One payment per payee: the sum of its canteens' net amounts, less what it still owed
    back from earlier quarters (``carried_fen``, :func:`~server.books.settlement_rules.payee_payouts`);
    a payee whose sum is not above zero gets no line (its debt is carried on)."""
    paid, _ = payee_payouts(doc.get("carried_fen", {}), payee_nets(doc["statements"]))
    by_payee: dict[str, dict[str, Any]] = {}
    for st in doc["statements"]:
        p = st["payee"]
        if p["name"] not in paid:
            continue
        line = by_payee.setdefault(
            p["name"],
            {
                "payee": p,
                "amount_fen": paid[p["name"]],
                "carried_fen": doc.get("carried_fen", {}).get(p["name"], 0),
                "canteens": [],
            },
        )
        line["canteens"].append(st["canteen_id"])
    return [by_payee[k] for k in sorted(by_payee)]


def payout_rows(doc: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for line in payout_lines(doc):
        p = line["payee"]
        notes = [] if p["bank_account"] else ["缺少银行账号"]
        if line["carried_fen"]:
            notes.append(f"已扣上期应退 {format_fen(-line['carried_fen'])}")
        note = "；".join(notes)
        rows.append(
            [
                p["name"],
                p["company_name"],
                p["bank_name"],
                p["bank_account"],
                line["amount_fen"],
                line["amount_fen"],
                " ".join(line["canteens"]),
                note,
            ]
        )
    return rows


def payout_csv(doc: dict[str, Any]) -> str:
    return as_csv(PAYOUT_HEADERS, payout_rows(doc), PAYOUT_YUAN_COLUMNS)
