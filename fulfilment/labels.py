"""Shipping labels: one small PDF page per order, drawn with reportlab's canvas.

The canvas API (not platypus) because a label is a fixed layout and this runs once per
order: it is most of the packing stage's CPU.
"""

from __future__ import annotations

import io

from reportlab.lib.pagesizes import A6
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas

MAX_LINES = 12


def shipping_label(
    *, reference: str, email: str, warehouse: str, batch_id: int,
    lines: list[tuple[str, str, int]],
) -> bytes:  # fmt: skip
    """The label's PDF bytes: who it goes to, where from, what is inside."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A6, pageCompression=0, invariant=1)
    pdf.setTitle(f"Shipping label {reference}")
    width, height = A6
    y = height - 12 * mm
    pdf.setFont("Helvetica-Bold", 16)
    pdf.drawString(8 * mm, y, reference)
    pdf.setFont("Helvetica", 9)
    y -= 8 * mm
    pdf.drawString(8 * mm, y, f"To: {email}")
    y -= 5 * mm
    pdf.drawString(8 * mm, y, f"From: warehouse {warehouse}, batch #{batch_id}")
    pdf.line(8 * mm, y - 3 * mm, width - 8 * mm, y - 3 * mm)
    y -= 9 * mm
    for sku, name, quantity in lines[:MAX_LINES]:
        pdf.drawString(8 * mm, y, f"{quantity} x {sku} {name}"[:60])
        y -= 4.5 * mm
    if len(lines) > MAX_LINES:
        pdf.drawString(8 * mm, y, f"... and {len(lines) - MAX_LINES} more lines")
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()
