"""core.bulk on the database under test (SQLite and PostgreSQL legs)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.bulk import bulk_insert_rows, bulk_update_rows
from shop.models import PriceChange, Product, RefreshItem, RefreshRun

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


def test_values_equal_in_python_but_of_other_types_each_arrive_as_given():
    """Each distinct value is prepared once per statement: 1, True and 1.0 are equal
    in Python, and must still land as a number, a boolean and a float."""
    products = Product.objects.bulk_create(Product(sku=f"E-{i}") for i in range(5))
    details: list[object] = [1, True, 1.0, "1", 1]
    when = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

    bulk_update_rows(
        Product,
        ("supplier_details", "last_refreshed_at"),
        [(p.pk, (d, when)) for p, d in zip(products, details, strict=True)],
    )

    got = list(Product.objects.order_by("pk").values_list("supplier_details", "last_refreshed_at"))
    assert [(type(d), d) for d, _ in got] == [(type(d), d) for d in details]
    assert {w for _, w in got} == {when}


def test_only_the_named_columns_change_and_nothing_is_sent_for_no_rows():
    product = Product.objects.create(sku="KEEP", name="keep", stock=7, description="d")

    assert bulk_update_rows(Product, ("stock",), []) == 0
    bulk_update_rows(Product, ("stock",), [(product.pk, (8,))])

    product.refresh_from_db()
    assert (product.name, product.stock, product.description) == ("keep", 8, "d")


def test_insert_sets_the_given_columns_and_the_defaults_of_the_rest():
    products = Product.objects.bulk_create(Product(sku=f"I-{i:04d}") for i in range(5000))
    run = RefreshRun.objects.create(total=5000, chunk_size=100)

    sent = bulk_insert_rows(RefreshItem, ("run", "product"), ((run.pk, p.pk) for p in products))

    assert sent == 5000
    items = RefreshItem.objects.filter(run=run)
    assert items.count() == 5000
    assert set(items.values_list("status", "attempts", "error", "retry_at", "finished_at")) == {
        ("pending", 0, "", None, None)
    }
    assert set(items.values_list("product_id", flat=True)) == {p.pk for p in products}
    assert bulk_insert_rows(RefreshItem, ("run", "product"), []) == 0


def test_insert_decimals_nulls_and_datetimes_arrive_as_given():
    product = Product.objects.create(sku="PC")
    run = RefreshRun.objects.create(total=1, chunk_size=1)
    when = datetime(2026, 11, 24, 9, 15, 0, 654321, tzinfo=UTC)
    rows = [
        (product.pk, Decimal("0.05"), Decimal("12345678.90"), when, None),
        (product.pk, Decimal("1.10"), Decimal("1.00"), when, run.pk),
    ]

    bulk_insert_rows(PriceChange, ("product", "old_price", "new_price", "changed_at", "run"), rows)

    got = sorted(
        PriceChange.objects.values_list(
            "product_id", "old_price", "new_price", "changed_at", "run_id"
        ),
        key=lambda r: r[1],
    )
    assert got == rows


def test_awkward_text_and_a_column_of_nothing_but_nulls_arrive_as_given():
    """Quotes, backslashes, braces, commas and control characters need escaping in a text
    array literal; a column whose every value is NULL gives no element to infer the
    array's type from (PostgreSQL gets these arrays in binary)."""
    awkward = ['a "quoted" name', "back\\slash", "{braces}, commas", "tab\tnew\nline", "NULL", ""]
    products = Product.objects.bulk_create(
        Product(sku=f"T-{i}", name="old", last_refreshed_at=datetime(2026, 1, 1, tzinfo=UTC))
        for i in range(len(awkward))
    )

    bulk_update_rows(
        Product,
        ("name", "description", "last_refreshed_at"),
        [(p.pk, (text, text * 2, None)) for p, text in zip(products, awkward, strict=True)],
    )

    got = {pk: (name, description) for pk, name, description in
           Product.objects.values_list("pk", "name", "description")}  # fmt: skip
    assert [got[p.pk] for p in products] == [(text, text * 2) for text in awkward]
    assert not Product.objects.filter(last_refreshed_at__isnull=False).exists()


def test_the_statement_goes_through_djangos_query_log_and_execute_wrappers():
    """DEBUG's query log (the debug toolbar's source) and execute wrappers (query counting
    in bench/fulfilment_settings.py) see bulk writes like any other query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    product = Product.objects.create(sku="LOG", name="old")
    wrapped = []

    def count(execute, sql, params, many, context):
        wrapped.append(sql)
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as queries, connection.execute_wrapper(count):
        bulk_update_rows(Product, ("name",), [(product.pk, ("new",))])

    assert len(queries) == 1 and len(wrapped) == 1
    assert 'UPDATE "shop_product" SET "name"' in queries[0]["sql"]
    assert wrapped[0].startswith('UPDATE "shop_product" SET "name"')
    assert Product.objects.get(pk=product.pk).name == "new"
