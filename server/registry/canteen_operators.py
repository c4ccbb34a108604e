"""A canteen's operators (操作员): the cards that may reverse a sale (冲正) at its terminals.

An operator is a card number, a name and a six-digit PIN. They are part of the canteen's
rules (``operators`` in its config, :mod:`server.registry.canteen_config`), so every
terminal of the canteen gets them with its other rules and can check an operator's card and
PIN **offline** before a reversal (``terminal.reversals``). The PIN is never stored or sent:
:func:`hash_operator_pins` turns the ``pin`` typed into a config change into a salted scrypt
record (:mod:`shared.pin_hash`) before the change is validated and stored, and
:func:`redact` hides the records from whoever reads the canteen back.
"""

from __future__ import annotations

from typing import Any

from shared.errors import DomainError
from shared.pin_hash import check_pin_format, pin_record

REDACTED = "******"


def hash_operator_pins(change: dict[str, Any]) -> dict[str, Any]:
    """``change`` with each operator's typed ``pin`` replaced by its hash record
    (``pin_hash``); an entry that already carries a ``pin_hash`` is kept as it is. Refuses a
    PIN that is not six digits or too simple (``operator_pin_invalid`` / ``_too_simple``)."""
    ops = change.get("operators") if isinstance(change, dict) else None
    if not isinstance(ops, dict):
        return change
    out: dict[str, Any] = {}
    for card, op in ops.items():
        if isinstance(op, dict) and "pin" in op:
            pin = check_pin_format(op["pin"], "operator_pin_invalid", "operator_pin_too_simple")
            op = {**{k: v for k, v in op.items() if k != "pin"}, "pin_hash": pin_record(pin)}
        elif isinstance(op, dict) and op.get("pin_hash") == REDACTED:
            raise DomainError(
                "invalid_input",
                f"operator {card}: type the PIN again (pin)",
                zh=f"操作员卡 {card}：请重新输入 PIN",
            )
        out[card] = op
    return {**change, "operators": out}


def redact(config: dict[str, Any]) -> dict[str, Any]:
    """The config as people read it: operators' PIN records replaced by ``******``."""
    ops = config.get("operators")
    if not isinstance(ops, dict):
        return config
    return {
        **config,
        "operators": {
            card: {**op, "pin_hash": REDACTED} if isinstance(op, dict) else op for card, op in ops.items()
        },
    }
