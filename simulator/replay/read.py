"""Reading a scenario file's values: each reader names where a bad value is and why. Pure."""

from __future__ import annotations

from typing import Any

from server.books.periods import Quarter
from shared.errors import DomainError
from shared.money import parse_yuan


class ScenarioError(ValueError):
    """A scenario that cannot be run: ``where`` (``events[3]``, ``canteens[0].meals``) and why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def as_obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(where, "an object is required")
    return value


def as_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ScenarioError(where, "a list is required")
    return value


def as_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(where, "non-blank text is required")
    return value.strip()


def as_pin(value: Any, where: str) -> str:
    """A payment PIN as the diner types it: six digits, as text (``"135790"``)."""
    if not isinstance(value, str) or len(value) != 6 or not value.isascii() or not value.isdigit():
        raise ScenarioError(where, "a PIN is six digits, as text")
    return value


def as_int(value: Any, where: str, lo: int, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        raise ScenarioError(
            where, f"a whole number {lo}..{hi if hi is not None else ''} is required, got {value!r}"
        )
    return value


def as_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(where, f"true or false is required, got {value!r}")
    return value


def yuan(value: Any, where: str, *, positive: bool = True) -> int:
    """Yuan (at most two decimals) to fen, or a ScenarioError saying what is wrong."""
    try:
        fen = parse_yuan(value)
    except DomainError as exc:
        raise ScenarioError(where, f"{value!r} is not an amount in yuan with at most two decimals") from exc
    if fen < 0 or (positive and fen == 0):
        raise ScenarioError(
            where, f"{value!r}: the amount must be {'above' if positive else 'at least'} zero"
        )
    return fen


def keys(d: dict[str, Any], where: str, required: set[str], optional: set[str]) -> None:
    missing = required - set(d)
    if missing:
        raise ScenarioError(where, f"missing {', '.join(sorted(missing))}")
    unknown = set(d) - required - optional
    if unknown:
        raise ScenarioError(where, f"unknown field(s) {', '.join(sorted(unknown))}")


def as_quarter(value: Any, where: str) -> str:
    try:
        return str(Quarter.parse(value))
    except DomainError as exc:
        raise ScenarioError(where, exc.detail) from exc
