"""CSV and PDF building blocks shared by the report types (reportlab, no matplotlib)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    Flowable,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

__all__ = ["PageBreak", "bar_chart", "csv_bytes", "heading", "paragraph", "pdf_bytes", "table"]

_STYLES = getSampleStyleSheet()


def csv_bytes(sections: Iterable[Sequence[Sequence[Any]]]) -> bytes:
    """Sections of rows, separated by one empty row; UTF-8 with BOM so Excel reads it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for i, rows in enumerate(sections):
        if i:
            writer.writerow([])
        writer.writerows(rows)
    return out.getvalue().encode("utf-8-sig")


def heading(text: str) -> Paragraph:
    return Paragraph(text, _STYLES["Heading2"])


def paragraph(text: str) -> Paragraph:
    return Paragraph(text, _STYLES["BodyText"])


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A plain striped table that repeats its header on every page."""
    data = [list(header), *([str(c) for c in row] for row in rows)]
    t = Table(data, repeatRows=1, hAlign="LEFT")
    t.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8e8e8")),
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("FONTSIZE", (0, 0), (-1, -1), 8),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f7f7f7")]),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#cccccc")),
            ]
        )
    )
    return t


def bar_chart(
    title: str, labels: Sequence[str], values: Sequence[float], *, height: float = 70 * mm
) -> Drawing:
    """A vertical bar chart drawn with reportlab's own graphics."""
    width = 170 * mm
    drawing = Drawing(width, height)
    chart = VerticalBarChart()
    chart.x, chart.y = 15 * mm, 15 * mm
    chart.width, chart.height = width - 20 * mm, height - 25 * mm
    chart.data = [list(values) or [0]]
    chart.categoryAxis.categoryNames = list(labels) or [""]
    step = max(1, len(labels) // 15)  # at most ~15 labels, so they stay readable
    chart.categoryAxis.categoryNames = [
        name if i % step == 0 else "" for i, name in enumerate(chart.categoryAxis.categoryNames)
    ]
    chart.categoryAxis.labels.angle = 30
    chart.categoryAxis.labels.boxAnchor = "ne"
    chart.categoryAxis.labels.fontSize = 6
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labels.fontSize = 7
    chart.bars[0].fillColor = colors.HexColor("#4a7ab5")
    drawing.add(chart)
    drawing.add(String(width / 2, height - 6 * mm, title, textAnchor="middle", fontSize=10))
    return drawing


def pdf_bytes(title: str, subtitle: str, story: list[Flowable]) -> bytes:
    """A4 PDF: title, subtitle, the story, and 'Page n' on each page.

    Uncompressed and invariant, so identical input gives identical bytes and the text can
    be checked without a PDF parser.
    """
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=title,
        author="Shop back office",
        invariant=1,
        pageCompression=0,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
    )

    def footer(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"{title} - Page {document.page}")
        canvas.restoreState()

    head = [Paragraph(title, _STYLES["Title"]), paragraph(subtitle), Spacer(1, 4 * mm)]
    doc.build(head + story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
