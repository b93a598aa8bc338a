"""core.bulk.bulk_update_rows on the database under test (SQLite and PostgreSQL legs)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.bulk import bulk_update_rows
from shop.models import Product

pytestmark = pytest.mark.django_db


def test_values_nulls_decimals_json_and_many_rows():
    Product.objects.bulk_create(Product(sku=f"B-{i:04d}", name="old") for i in range(1500))
    ids = list(Product.objects.order_by("pk").values_list("pk", flat=True))
    when = datetime(2026, 11, 23, 12, 30, 15, 123456, tzinfo=UTC)
    rows = [
        (pk, (f"name {i}", Decimal("12345678.90") if i % 2 else Decimal("0.05"), i,
              {"i": i, "tags": ["x", None], "ümlaut": "é"}, when if i % 3 else None))
        for i, pk in enumerate(ids)
    ]  # fmt: skip

    sent = bulk_update_rows(
        Product, ("name", "price", "stock", "supplier_details", "last_refreshed_at"), rows
    )

    assert sent == 1500
    got = {
        p.pk: (p.name, p.price, p.stock, p.supplier_details, p.last_refreshed_at)
        for p in Product.objects.all()
    }
    assert got == {pk: values for pk, values in rows}
    assert Product.objects.filter(last_refreshed_at__isnull=True).count() == 500


def test_only_the_named_columns_change_and_nothing_is_sent_for_no_rows():
    product = Product.objects.create(sku="KEEP", name="keep", stock=7, description="d")

    assert bulk_update_rows(Product, ("stock",), []) == 0
    bulk_update_rows(Product, ("stock",), [(product.pk, (8,))])

    product.refresh_from_db()
    assert (product.name, product.stock, product.description) == ("keep", 8, "d")
