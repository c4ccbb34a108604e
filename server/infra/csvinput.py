"""Reading the CSV files clerks send: encodings, header spellings, line-numbered errors.

Pure: bytes in, rows out. A file is UTF-8 with or without a byte-order mark (what
"CSV UTF-8" in Excel writes); a file that is not valid UTF-8 is read as GB18030, the
superset of GBK that Excel on Chinese Windows writes for plain "CSV". Commas separate
fields; a header line with tabs and no commas (pasted from a spreadsheet) is read as
tab-separated. Headers are matched after :func:`normalize_header` folds the spellings a
clerk would type — full-width brackets, units in brackets, spaces and line breaks inside a
header cell — onto one key.

Every problem is a :class:`LineError` with the file's line number (the header is line 1),
the column, a stable code from :mod:`shared.errors` and an English detail; importers
collect them all and refuse the whole file if there is any (``import_rejected``).
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field

from shared.errors import DomainError, message

# the largest CSV file an import accepts (the API's and the web console's uploads alike)
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
_BRACKETED = re.compile(r"[(\[【][^)\]】]*[)\]】]")
_SPACES = re.compile(r"[\s\u3000]+")
_PUNCT = re.compile(r"[-_/:：·、*＊]+")


@dataclass(frozen=True)
class LineError:
    """One refused line. ``column`` is the header as the clerk wrote it (or, for a missing
    column, its usual Chinese name); ``detail_zh`` says the same as ``detail`` in Chinese."""

    line: int
    column: str
    code: str
    detail: str
    detail_zh: str = ""

    def to_json(self, lang: str = "en") -> dict[str, object]:
        return {**asdict(self), "message": message(self.code, lang)}

    def text(self) -> str:
        """``第3行 [卡号] 输入有误：卡号为空 / line 3 [卡号]: invalid input: 卡号 is blank``."""
        col = f" [{self.column}]" if self.column else ""
        zh = f"第{self.line}行{col} {message(self.code, 'zh')}" + (
            f"：{self.detail_zh}" if self.detail_zh else ""
        )
        en = f"line {self.line}{col}: {message(self.code, 'en')}" + (
            f": {self.detail}" if self.detail else ""
        )
        return f"{zh} / {en}"


def rejected(what: str, errors: list[LineError]) -> DomainError:
    """The one error an importer raises when any line is wrong: nothing was applied."""
    lines = sorted({e.line for e in errors})
    return DomainError(
        "import_rejected",
        f"{what}: {len(errors)} problem(s) on line(s) {', '.join(map(str, lines))}",
        errors=[e.to_json() for e in errors],
    )


def header_name(aliases: Mapping[str, str], key: str) -> str:
    """The usual (first listed) header for ``key``: ``card_id`` → ``卡号``."""
    return next((name for name, k in aliases.items() if k == key), key)


def normalize_header(cell: str) -> str:
    """'食堂 数量 (个)' → '食堂数量'; '就餐面\\n积(平方)' → '就餐面积'; '餐位标准-早餐' → '餐位标准早餐'."""
    text = unicodedata.normalize("NFKC", cell.replace("\ufeff", ""))
    text = _BRACKETED.sub("", text)
    return _PUNCT.sub("", _SPACES.sub("", text)).lower()


def decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError as exc:
            raise DomainError(
                "invalid_input", "the file is neither UTF-8 nor GBK text; save it as CSV UTF-8"
            ) from exc


@dataclass(frozen=True)
class Table:
    """A CSV file with its header mapped to keys; ``rows`` are (line number, {key: cell})."""

    columns: dict[str, str]  # key -> header as written
    rows: list[tuple[int, dict[str, str]]]
    unknown: list[str] = field(default_factory=list)  # headers no alias knows, as written


def read_table(data: bytes | str, aliases: Mapping[str, str], required: set[str], what: str) -> Table:
    """Read a CSV whose headers map through ``aliases`` (normalized header → key).

    The header is the first of the first few rows that names every ``required`` column, so
    a title line above it ("“食堂一卡通”信息统计表") is skipped. A header split over two rows
    (a merged "餐位标准(元/餐)" cell above 早餐/中餐/晚餐, as the seed's table has) is read
    as one: the lower cell wins where there is one. Unknown headers are not read (clerks
    add columns of their own) but listed in ``Table.unknown`` so an importer can say so;
    two columns for one key, or a missing required one, reject the file. Blank lines are skipped.
    """
    text = decode(data) if isinstance(data, bytes) else data.lstrip("\ufeff")
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first and "," not in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    head: list[tuple[int, list[str]]] = []  # (last line number, cells) of the first rows
    for cells in reader:
        head.append((reader.line_num, cells))
        if len(head) == _HEADER_SEARCH_ROWS + 1:
            break
    if not head:
        raise rejected(what, [LineError(1, "", "invalid_input", "the file is empty", "文件是空的")])
    found = _find_header(head, aliases, required)
    if found is None:
        header, header_end, rest = head[0][1], head[0][0], head[1:]
    else:
        header, header_end, rest = found[0], head[found[1]][0], head[found[1] + 1 :]
    errors: list[LineError] = []
    columns: dict[str, str] = {}
    index: dict[str, int] = {}
    unknown: list[str] = []
    for i, cell in enumerate(header):
        key = aliases.get(normalize_header(cell))
        if key is None:
            if cell.strip():
                unknown.append(cell.strip())
            continue
        if key in index:
            errors.append(
                LineError(
                    header_end,
                    cell,
                    "invalid_input",
                    f"two columns mean {columns[key]!r}",
                    f"与“{columns[key]}”是同一列，请删去一列",
                )
            )
            continue
        columns[key], index[key] = cell.strip(), i
    for key in sorted(required - set(index)):
        name = header_name(aliases, key)
        errors.append(
            LineError(header_end, name, "invalid_input", f"missing column {name}", f"缺少“{name}”列")
        )
    if errors:
        raise rejected(what, errors)
    rows = list(_rows(rest, header_end, reader, index))
    if not rows:
        raise rejected(
            what,
            [
                LineError(
                    header_end + 1,
                    "",
                    "invalid_input",
                    "the file has a header but no rows",
                    "只有表头，没有数据行",
                )
            ],
        )
    return Table(columns, rows, unknown)


_HEADER_SEARCH_ROWS = 5


def _find_header(
    head: list[tuple[int, list[str]]], aliases: Mapping[str, str], required: set[str]
) -> tuple[list[str], int] | None:
    """(merged header cells, index in ``head`` of its last row) or None."""
    for i, (_, cells) in enumerate(head[:_HEADER_SEARCH_ROWS]):
        if not required <= {aliases.get(normalize_header(c)) for c in cells}:
            continue  # a title line above the header (never merged with the header below it)
        merged, last = cells, i
        if i + 1 < len(head):
            below = head[i + 1][1]
            filled = [c for c in below if c.strip()]
            if filled and all(normalize_header(c) in aliases for c in filled):
                width = max(len(cells), len(below))
                merged = [
                    (
                        below[j]
                        if j < len(below) and below[j].strip()
                        else (cells[j] if j < len(cells) else "")
                    )
                    for j in range(width)
                ]
                last = i + 1
        keys = {aliases.get(normalize_header(c)) for c in merged}
        if required <= keys:
            return merged, last
    return None


def _rows(
    buffered: list[tuple[int, list[str]]], after_line: int, reader: Iterator[list[str]], index: dict[str, int]
) -> Iterator[tuple[int, dict[str, str]]]:
    line = after_line

    def rest() -> Iterator[tuple[int, list[str]]]:
        yield from buffered
        for cells in reader:
            yield reader.line_num, cells  # type: ignore[attr-defined]

    for end, cells in rest():
        start, line = line + 1, end
        if not any(c.strip() for c in cells):
            continue
        yield start, {k: (cells[i].strip() if i < len(cells) else "") for k, i in index.items()}


def parse_count(value: str, line: int, column: str, errors: list[LineError]) -> int | None:
    """A whole number ≥ 0 ('12', '12人', '１２'); blank is None."""
    text = _strip_unit(value, ("个", "人", "名", "位"))
    if not text:
        return None
    if not text.isdigit():
        errors.append(
            LineError(line, column, "invalid_input", f"{value!r} is not a whole number", f"“{value}”不是整数")
        )
        return None
    return int(text)


def parse_area(value: str, line: int, column: str, errors: list[LineError]) -> float | None:
    """Square metres ≥ 0, decimals allowed ('350', '350.5', '350平方', '350㎡'); blank is None."""
    text = _strip_unit(value, ("平方米", "平方", "平米", "m2"))
    if not text:
        return None
    if not re.fullmatch(r"\d+(\.\d+)?", text):
        errors.append(
            LineError(
                line,
                column,
                "invalid_input",
                f"{value!r} is not an area in m²",
                f"“{value}”不是面积（平方米）",
            )
        )
        return None
    return float(text)


def _strip_unit(value: str, units: tuple[str, ...]) -> str:
    text = unicodedata.normalize("NFKC", value).strip()  # full-width digits, ㎡ → m2
    for unit in units:
        if text.endswith(unit):
            return text[: -len(unit)].strip()
    return text
