"""Price changes: what supplier refreshes changed, over a range of days."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from reports import rendering as r
from reports.registry import DateRangeForm, ReportType, date_range_text, date_windows

WINDOW_DAYS = 14


class PriceChangesForm(DateRangeForm):
    # A refresh a moment ago changed prices: the default range shows them.
    default_ends_today = True


class PriceChanges(ReportType):
    identifier = "price_changes"
    label = "Price changes"
    description = "Every price change recorded by product refreshes, with increases and drops."
    form_class = PriceChangesForm

    def plan(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return date_windows(params["date_from"], params["date_to"], WINDOW_DAYS)

    def gather(self, params: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
        from shop.models import PriceChange

        tz = timezone.get_current_timezone()
        start = datetime.combine(date.fromisoformat(part["from"]), time.min, tzinfo=tz)
        end = datetime.combine(
            date.fromisoformat(part["to"]) + timedelta(days=1), time.min, tzinfo=tz
        )
        changes = (
            PriceChange.objects.filter(changed_at__gte=start, changed_at__lt=end)
            .select_related("product")
            .order_by("changed_at", "pk")
        )
        return {
            "changes": [
                [
                    timezone.localtime(c.changed_at, tz).isoformat(timespec="seconds"),
                    c.product.sku,
                    c.product.name,
                    str(c.old_price),
                    str(c.new_price),
                    c.run_id,
                ]
                for c in changes
            ]
        }

    def combine(self, params: dict[str, Any], partials: list[dict[str, Any]]) -> dict[str, Any]:
        rows = []
        for changed_at, sku, name, old, new, run_id in sorted(
            (c for p in partials for c in p["changes"]), key=lambda c: (c[0], c[1])
        ):
            old_d, new_d = Decimal(old), Decimal(new)
            delta = new_d - old_d
            pct = (delta / old_d * 100).quantize(Decimal("0.1")) if old_d else None
            rows.append(
                {
                    "changed_at": changed_at,
                    "sku": sku,
                    "name": name,
                    "old": old_d,
                    "new": new_d,
                    "delta": delta,
                    "pct": pct,
                    "run": run_id,
                }
            )
        return {
            "rows": rows,
            "changes": len(rows),
            "products": len({row["sku"] for row in rows}),
            "increases": sum(1 for row in rows if row["delta"] > 0),
            "decreases": sum(1 for row in rows if row["delta"] < 0),
        }

    def describe(self, params: dict[str, Any]) -> str:
        return date_range_text(params["date_from"], params["date_to"])

    def render_csv(self, params: dict[str, Any], data: dict[str, Any]) -> bytes:
        header = ["changed at", "sku", "name", "old price", "new price", "change", "change %"]
        rows = []
        for row in data["rows"]:
            when, sku, *prices = _prices(row)
            rows.append([when, sku, row["name"], *prices])
        summary = [
            ["metric", "value"],
            ["changes", data["changes"]],
            ["products", data["products"]],
            ["increases", data["increases"]],
            ["decreases", data["decreases"]],
        ]
        return r.csv_bytes([summary, [header, *rows]])

    def render_pdf(self, params: dict[str, Any], data: dict[str, Any]) -> bytes:
        """A table is what helps here: a chart of a handful of changes says nothing more."""
        story = [
            r.paragraph(
                f"Changes: {data['changes']} &nbsp; Products: {data['products']} &nbsp; "
                f"Increases: {data['increases']} &nbsp; Decreases: {data['decreases']}"
            ),
            r.table(
                ["Changed at", "SKU", "Old", "New", "Change", "%"],
                [_prices(row) for row in data["rows"]],
            ),
        ]
        return r.pdf_bytes(self.label, self.describe(params), story)


def _prices(row: dict[str, Any]) -> list[Any]:
    """One change as CSV and PDF both print it: when, SKU, old, new, change, change %."""
    pct = "" if row["pct"] is None else f"{row['pct']:+.1f}"
    old, new, delta = f"{row['old']:.2f}", f"{row['new']:.2f}", f"{row['delta']:+.2f}"
    return [row["changed_at"], row["sku"], old, new, delta, pct]
