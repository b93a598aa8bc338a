"""Helpers to run a report end to end and to read its files."""

from __future__ import annotations

import csv
import io
import re

from core.waiting import wait_for
from reports.models import ReportRun
from reports.storage import report_storage


def wait_finished(run: ReportRun, timeout: float = 60) -> ReportRun:
    def finished() -> ReportRun | None:
        run.refresh_from_db()
        return run if run.is_finished else None

    return wait_for(finished, timeout=timeout, what=f"report run #{run.pk} to finish")


def read_file(run: ReportRun, kind: str) -> bytes:
    with report_storage().open(run.file_name(kind), "rb") as f:
        return f.read()


def csv_sections(content: bytes) -> list[list[list[str]]]:
    """The CSV's sections (separated by an empty row) as lists of rows."""
    sections: list[list[list[str]]] = [[]]
    for row in csv.reader(io.StringIO(content.decode("utf-8-sig"))):
        if not row:
            sections.append([])
        else:
            sections[-1].append(row)
    return sections


def pdf_pages(content: bytes) -> int:
    return len(re.findall(rb"/Type /Page(?!s)", content))


def pdf_has_text(content: bytes, text: str) -> bool:
    """Our PDFs are uncompressed: shown text appears as a literal string."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"({escaped})".encode() in content or escaped.encode() in content
