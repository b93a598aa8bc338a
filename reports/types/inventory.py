"""Inventory: stock levels, low-stock products and stock value per currency, right now."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from reports import rendering as r
from reports.registry import ReportType

# Products per partial aggregation.
CHUNK = 500


class InventoryForm(forms.Form):
    cli_names = {"low_stock_threshold": "threshold"}

    low_stock_threshold = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=100_000,
        label="Low stock at or below",
        help_text="Units; default 5.",
    )

    def clean_low_stock_threshold(self) -> int:
        value = self.cleaned_data.get("low_stock_threshold")
        return 5 if value is None else value


class Inventory(ReportType):
    identifier = "inventory"
    label = "Inventory"
    description = "Stock levels, products at or below the low-stock threshold, stock value."
    form_class = InventoryForm

    def plan(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Contiguous product-id ranges of CHUNK products each, fixed when requested."""
        from shop.models import Product

        ids = list(Product.objects.order_by("pk").values_list("pk", flat=True))
        if not ids:
            return [{"pk_min": 0, "pk_max": 0}]
        return [
            {"pk_min": ids[i], "pk_max": ids[min(i + CHUNK, len(ids)) - 1]}
            for i in range(0, len(ids), CHUNK)
        ]

    def gather(self, params: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
        from shop.models import Product

        rows = Product.objects.filter(pk__gte=part["pk_min"], pk__lte=part["pk_max"]).order_by(
            "sku"
        )
        return {
            "products": [
                [p.sku, p.name, p.stock, str(p.price), p.currency]
                for p in rows.only("sku", "name", "stock", "price", "currency")
            ]
        }

    def combine(self, params: dict[str, Any], partials: list[dict[str, Any]]) -> dict[str, Any]:
        threshold = params["low_stock_threshold"]
        products = sorted((row for p in partials for row in p["products"]), key=lambda x: x[0])
        value: dict[str, Decimal] = {}
        rows = []
        for sku, name, stock, price, currency in products:
            line_value = Decimal(price) * max(stock, 0)
            value[currency] = value.get(currency, Decimal("0.00")) + line_value
            rows.append(
                {
                    "sku": sku,
                    "name": name,
                    "stock": stock,
                    "price": Decimal(price),
                    "currency": currency,
                    "value": line_value,
                    "low": stock <= threshold,
                }
            )
        return {
            "rows": rows,
            "threshold": threshold,
            "products": len(rows),
            "units": sum(max(row["stock"], 0) for row in rows),
            "out_of_stock": sum(1 for row in rows if row["stock"] <= 0),
            "low_stock": [row for row in rows if row["low"]],
            "value": dict(sorted(value.items())),
        }

    def describe(self, params: dict[str, Any]) -> str:
        return f"low stock at or below {params['low_stock_threshold']}"

    def render_csv(self, params: dict[str, Any], data: dict[str, Any]) -> bytes:
        summary = [
            ["metric", "value"],
            ["products", data["products"]],
            ["units in stock", data["units"]],
            ["out of stock", data["out_of_stock"]],
            ["low stock", len(data["low_stock"])],
            *([f"stock value {cur}", f"{v:.2f}"] for cur, v in data["value"].items()),
        ]
        products = [
            ["sku", "name", "stock", "price", "currency", "stock value", "low stock"],
            *(
                [
                    row["sku"],
                    row["name"],
                    row["stock"],
                    f"{row['price']:.2f}",
                    row["currency"],
                    f"{row['value']:.2f}",
                    "yes" if row["low"] else "no",
                ]
                for row in data["rows"]
            ),
        ]
        return r.csv_bytes([summary, products])

    def render_pdf(self, params: dict[str, Any], data: dict[str, Any]) -> bytes:
        low = len(data["low_stock"]) - data["out_of_stock"]
        in_stock = data["products"] - len(data["low_stock"])
        value = ", ".join(f"{v:.2f} {cur}" for cur, v in data["value"].items()) or "0.00"
        story = [
            r.paragraph(
                f"Products: {data['products']} &nbsp; Units in stock: {data['units']} &nbsp; "
                f"Stock value: {value}"
            ),
            r.bar_chart(
                "Products by stock level",
                ["Out of stock", f"Low (1-{data['threshold']})", "In stock"],
                [data["out_of_stock"], max(low, 0), in_stock],
            ),
            r.PageBreak(),
            r.heading(f"Low stock ({len(data['low_stock'])} products)"),
            r.table(
                ["SKU", "Name", "Stock", "Price", "Currency"],
                [
                    [p["sku"], p["name"], p["stock"], f"{p['price']:.2f}", p["currency"]]
                    for p in data["low_stock"]
                ],
            ),
        ]
        return r.pdf_bytes(self.label, self.describe(params), story)
