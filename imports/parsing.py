"""What makes a catalogue file acceptable at all, before any row is looked at.

A file-level problem (not UTF-8, no SKU column, the same SKU twice, a cell a spreadsheet
would run as a formula, too big) refuses the whole file with a message that says how to
fix it: nothing in such a file is applied. Row-level problems (a price that is not a
number) are the resource's business (imports/resources.py).
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict

import tablib
from django.conf import settings
from import_export.formats.base_formats import CSV

from core.text import plural

COLUMNS = ("sku", "price", "currency", "stock", "name", "description")
NUMERIC = frozenset({"price", "stock"})
# OWASP's CSV injection guidance: a cell starting with one of these is a formula to Excel,
# LibreOffice and Google Sheets (tab and carriage return can hide the others).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")
SHOWN = 10  # problems listed in one message; the rest are counted


class BadFile(ValueError):
    """A file-level problem: the whole file is refused and nothing in it is applied."""


def too_big_message(size: int) -> str:
    return (
        f"The file is {_size(size)}; at most {_size(settings.IMPORTS_MAX_UPLOAD_BYTES)} can "
        "be imported at once (IMPORTS_MAX_UPLOAD_BYTES). Split it and import the parts. "
        "Nothing was read or saved."
    )


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"  # unreachable


def decode(data: bytes) -> str:
    if b"\x00" in data[:65536]:
        raise BadFile("This is not a text file (it contains NUL bytes): upload a CSV file.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadFile(
            f"The file is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} is not "
            "valid UTF-8 (a file saved as Latin-1 or Windows-1252?). Save it as "
            '"CSV UTF-8" and upload it again.'
        ) from None


def _listed(problems: list[str]) -> str:
    more = len(problems) - SHOWN
    shown = "; ".join(problems[:SHOWN])
    return shown + (f"; and {plural(more, 'more')}" if more > 0 else "")


def catalogue_parse(data: bytes | str) -> tablib.Dataset:
    """The file as a dataset (normalised headers; `dataset.lines[i]` is row i's line)."""
    if isinstance(data, bytes | bytearray):
        if len(data) > settings.IMPORTS_MAX_UPLOAD_BYTES:
            raise BadFile(too_big_message(len(data)))
        text = decode(bytes(data))
    else:
        text = data
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise BadFile(
                "The file is empty: the first line must name the columns, e.g. sku,price."
            )
        headers = [h.strip().lower() for h in header]
        _check_headers(headers)
        rows, lines = [], []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # blank lines are harmless
            if len(cells) != len(headers):
                raise BadFile(
                    f"Line {reader.line_num} has {plural(len(cells), 'cell')} but the header "
                    f"names {plural(len(headers), 'column')}: check the separators (commas) "
                    "and quotes on that line."
                )
            pairs = zip(headers, cells, strict=True)
            rows.append([c.strip() if h == "sku" else c for h, c in pairs])
            lines.append(reader.line_num)
            if len(rows) > settings.IMPORTS_MAX_ROWS:
                raise BadFile(
                    f"The file has more than {settings.IMPORTS_MAX_ROWS:,} rows "
                    "(IMPORTS_MAX_ROWS): split it and import the parts."
                )
    except csv.Error as exc:
        raise BadFile(f"Line {reader.line_num} is not valid CSV: {exc}.") from None
    if not rows:
        raise BadFile("The file has a header line but no rows to import.")
    _check_formulas(headers, rows, lines)
    _check_duplicates(headers, rows, lines)
    dataset = tablib.Dataset(*rows, headers=headers)
    dataset.lines = lines
    return dataset


def _check_headers(headers: list[str]) -> None:
    unknown = [h or "(empty)" for h in headers if h not in COLUMNS]
    if unknown:
        raise BadFile(
            f"Unknown column(s): {', '.join(unknown)}. The columns are sku (required) and "
            f"any of {', '.join(COLUMNS[1:])}."
        )
    twice = sorted({h for h in headers if headers.count(h) > 1})
    if twice:
        raise BadFile(f"Column(s) named twice: {', '.join(twice)}.")
    if "sku" not in headers:
        raise BadFile(
            "The file has no sku column: every row needs the SKU of the product it changes "
            f"(the header line is: {','.join(headers)})."
        )
    if len(headers) == 1:
        raise BadFile("The file has only the sku column: add the columns to change.")


def _check_formulas(headers: list[str], rows: list[list[str]], lines: list[int]) -> None:
    found = []
    for line, cells in zip(lines, rows, strict=True):
        for column, cell in zip(headers, cells, strict=True):
            if not cell.startswith(FORMULA_STARTS):
                continue
            if column in NUMERIC and PLAIN_NUMBER.fullmatch(cell):
                continue  # "-3" is a number, not a formula
            found.append(f"line {line}, column {column}: {cell[:30]!r}")
    if found:
        raise BadFile(
            "Cells starting with =, +, -, @, a tab or a carriage return are refused: a "
            "spreadsheet opening the data later would run them as formulas (CSV injection). "
            f"Remove the leading character and upload again: {_listed(found)}."
        )


def _check_duplicates(headers: list[str], rows: list[list[str]], lines: list[int]) -> None:
    column = headers.index("sku")
    seen: dict[str, list[int]] = defaultdict(list)
    for line, cells in zip(lines, rows, strict=True):
        if cells[column]:
            seen[cells[column]].append(line)
    twice = [
        f"{sku!r} on lines {', '.join(map(str, at))}" for sku, at in seen.items() if len(at) > 1
    ]
    if twice:
        raise BadFile(
            f"Each SKU may appear once, so that it is clear which row wins: {_listed(twice)}."
        )


class CatalogueCSV(CSV):
    """django-import-export's CSV format, with our file-level checks and messages."""

    def get_title(self) -> str:
        return "csv (sku, price, currency, stock, name, description)"

    def is_binary(self) -> bool:
        return True  # we decode (strictly, with a clear message), not the storage

    def get_read_mode(self) -> str:
        return "rb"

    def create_dataset(self, in_stream: bytes | str, **kwargs: object) -> tablib.Dataset:
        return catalogue_parse(in_stream)
