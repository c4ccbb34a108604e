"""Which purse pays, on the server: the shared spend-order rule (:mod:`shared.spend_order`).

The terminal splits a sale over its cached balances when it approves it; the server splits
it again over the ledger's balances when it applies it, with the same function, and books
that split. A sale the terminal approved offline is honoured even when the server finds less
money than the terminal thought: the shortfall is taken from the self purse, which goes
negative (:attr:`Split.overdraft_fen`, recorded), and the cardholder is blocked until a
top-up covers it.
"""

from __future__ import annotations

from shared.spend_order import Split, split_payment

__all__ = ["Split", "split_payment"]
