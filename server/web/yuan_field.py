"""A form field for an amount a person types in yuan (``12.50``), holding integer fen.

Parsed by the project's one parser, :func:`shared.money.parse_yuan` (at most two decimals,
``¥`` and ``元`` allowed, full-width digits too); shown back as ``12.50``. A blank field holds
``None`` (add ``InputRequired`` when it must be filled); a negative amount is refused. Whether
an amount is allowed (a price above ¥0.00, not above its reference) is the domain's rule,
refused by the service the form calls.
"""

from __future__ import annotations

from typing import Any

from wtforms import StringField

from shared.errors import DomainError
from shared.money import format_fen, parse_yuan

BAD_AMOUNT = "金额格式有误：以元为单位，最多两位小数，如 12.50"


class YuanField(StringField):
    data: int | None  # type: ignore[assignment]

    def __init__(self, label: str | None = None, validators: Any = None, **kwargs: Any) -> None:  # noqa: ANN401
        kwargs.setdefault("render_kw", {"inputmode": "decimal", "autocomplete": "off"})
        super().__init__(label, validators, **kwargs)

    def process_formdata(self, valuelist: list[str]) -> None:
        self.data = None
        text = valuelist[0].strip() if valuelist else ""
        if not text:
            return
        try:
            fen = parse_yuan(text)
        except DomainError:
            raise ValueError(BAD_AMOUNT) from None
        if fen < 0:
            raise ValueError("金额不能为负数")
        self.data = fen

    def _value(self) -> str:
        if self.raw_data:
            return str(self.raw_data[0])
        return "" if self.data is None else format_fen(int(self.data)).lstrip("¥")
