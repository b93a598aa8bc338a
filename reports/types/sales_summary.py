"""Sales summary: revenue, units and orders per day, and the top products, over a range."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.db.models import Count, DecimalField, ExpressionWrapper, F, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from reports import rendering as r
from reports.registry import DateRangeForm, ReportType, date_range_text, sized_windows


class SalesSummaryForm(DateRangeForm):
    cli_names = {**DateRangeForm.cli_names, "top_n": "top"}

    top_n = forms.IntegerField(
        required=False, min_value=1, max_value=100, label="Top products", help_text="Default 10."
    )

    def clean_top_n(self) -> int:
        return self.cleaned_data.get("top_n") or 10


def _bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """[first 00:00, day after last 00:00) in the shop's time zone."""
    tz = timezone.get_current_timezone()
    return (
        datetime.combine(first, time.min, tzinfo=tz),
        datetime.combine(last + timedelta(days=1), time.min, tzinfo=tz),
    )


class SalesSummary(ReportType):
    identifier = "sales_summary"
    label = "Sales summary"
    description = "Revenue, units and orders per day, and the best-selling products."
    form_class = SalesSummaryForm

    def plan(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Parts sized from the orders in range (one indexed count), at most one per slot."""
        from shop.models import Order

        first, last = params["date_from"], params["date_to"]
        start, end = _bounds(first, last)
        orders = Order.objects.filter(placed_at__gte=start, placed_at__lt=end).count()
        return sized_windows(first, last, orders, settings.REPORTS_MIN_ORDERS_PER_PART, self.slots)

    def gather(self, params: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
        from shop.models import Order, OrderLine

        start, end = _bounds(date.fromisoformat(part["from"]), date.fromisoformat(part["to"]))
        lines = OrderLine.objects.filter(
            order__placed_at__gte=start, order__placed_at__lt=end
        ).exclude(order__status=Order.Status.CANCELLED)
        amount = ExpressionWrapper(
            F("quantity") * F("unit_price"),
            output_field=DecimalField(max_digits=16, decimal_places=2),
        )
        days = (
            lines.annotate(day=TruncDate("order__placed_at"))
            .values("day")
            .annotate(
                revenue=Sum(amount), units=Sum("quantity"), orders=Count("order", distinct=True)
            )
        )
        products = lines.values("product_id", "product__sku", "product__name").annotate(
            revenue=Sum(amount), units=Sum("quantity")
        )
        return {
            "days": {
                row["day"].isoformat(): {
                    "revenue": str(row["revenue"]),
                    "units": row["units"],
                    "orders": row["orders"],
                }
                for row in days
            },
            "products": {
                str(row["product_id"]): {
                    "sku": row["product__sku"],
                    "name": row["product__name"],
                    "revenue": str(row["revenue"]),
                    "units": row["units"],
                }
                for row in products
            },
        }

    def combine(self, params: dict[str, Any], partials: list[dict[str, Any]]) -> dict[str, Any]:
        days: dict[str, dict[str, Any]] = {}
        cursor: date = params["date_from"]
        while cursor <= params["date_to"]:  # every day, quiet days included
            days[cursor.isoformat()] = {"revenue": Decimal("0.00"), "units": 0, "orders": 0}
            cursor += timedelta(days=1)
        products: dict[str, dict[str, Any]] = {}
        for partial in partials:
            for day, row in partial["days"].items():
                target = days.setdefault(day, {"revenue": Decimal("0.00"), "units": 0, "orders": 0})
                target["revenue"] += Decimal(row["revenue"])
                target["units"] += row["units"]
                target["orders"] += row["orders"]
            for pid, row in partial["products"].items():
                target = products.setdefault(
                    pid,
                    {"sku": row["sku"], "name": row["name"], "revenue": Decimal("0"), "units": 0},
                )
                target["revenue"] += Decimal(row["revenue"])
                target["units"] += row["units"]
        top = sorted(products.values(), key=lambda p: (-p["revenue"], -p["units"], p["sku"]))
        return {
            "days": days,
            "top": top[: params["top_n"]],
            "total_revenue": sum((d["revenue"] for d in days.values()), Decimal("0.00")),
            "total_units": sum(d["units"] for d in days.values()),
            "total_orders": sum(d["orders"] for d in days.values()),
        }

    def describe(self, params: dict[str, Any]) -> str:
        return f"{date_range_text(params['date_from'], params['date_to'])}, top {params['top_n']}"

    def render_csv(self, params: dict[str, Any], data: dict[str, Any]) -> bytes:
        day_rows = [
            [day, d["orders"], d["units"], f"{d['revenue']:.2f}"] for day, d in data["days"].items()
        ]
        totals = [
            "total",
            data["total_orders"],
            data["total_units"],
            f"{data['total_revenue']:.2f}",
        ]
        top_rows = [
            [i, p["sku"], p["name"], p["units"], f"{p['revenue']:.2f}"]
            for i, p in enumerate(data["top"], start=1)
        ]
        return r.csv_bytes(
            [
                [["date", "orders", "units", "revenue"], *day_rows, totals],
                [["rank", "sku", "name", "units", "revenue"], *top_rows],
            ]
        )

    def render_pdf(self, params: dict[str, Any], data: dict[str, Any]) -> bytes:
        days = data["days"]
        story = [
            r.paragraph(
                f"Orders: {data['total_orders']} &nbsp; Units: {data['total_units']} &nbsp; "
                f"Revenue: {data['total_revenue']:.2f}"
            ),
            r.bar_chart(
                "Revenue per day", list(days), [float(d["revenue"]) for d in days.values()]
            ),
            r.heading("Top products"),
            r.table(
                ["#", "SKU", "Name", "Units", "Revenue"],
                [
                    [i, p["sku"], p["name"], p["units"], f"{p['revenue']:.2f}"]
                    for i, p in enumerate(data["top"], start=1)
                ],
            ),
            r.PageBreak(),
            r.heading("Per day"),
            r.table(
                ["Date", "Orders", "Units", "Revenue"],
                [[day, d["orders"], d["units"], f"{d['revenue']:.2f}"] for day, d in days.items()],
            ),
        ]
        return r.pdf_bytes(self.label, self.describe(params), story)
