"""`make run`'s story, end to end: two refreshes against the demo stand-in, real workers."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from devtools.demo import supplier_record
from devtools.supplier_stub import DEMO_FAILURES, StubBehaviour, SupplierStub
from shop.models import PriceChange, Product, RefreshItem, RefreshRun
from shop.workflows import refresh_run_request
from tests.shop.conftest import make_products, wait_finished

pytestmark = pytest.mark.workers


@pytest.fixture
def demo_supplier(supplier: SupplierStub) -> Iterator[SupplierStub]:
    """The session's stand-in in demo mode (slow = 1.5 s, over the tests' 1 s read timeout)."""
    supplier.reset(StubBehaviour(demo=True, slow_seconds=1.5))
    yield supplier
    supplier.reset()  # plain again for the tests that follow


def refresh(products: list[Product]) -> RefreshRun:
    run, _ = refresh_run_request(
        product_ids=[p.pk for p in products], trigger=RefreshRun.Trigger.COMMAND
    )
    return wait_finished(run, timeout=120)


def test_two_demo_refreshes_show_each_failure_once_and_a_few_price_changes(workers, demo_supplier):
    products = make_products(200)  # what seed_demo creates
    permanent = {sku for sku, kind in DEMO_FAILURES.items() if kind not in ("slow", "server-error")}

    first = refresh(products)

    assert (first.status, first.succeeded, first.failed) == (
        RefreshRun.Status.COMPLETED_WITH_ERRORS, 196, 4,
    )  # fmt: skip
    errors = dict(Product.objects.exclude(last_error="").values_list("sku", "last_error"))
    assert set(errors) == permanent
    for sku in permanent:
        kind = DEMO_FAILURES[sku]
        expected = {
            "unknown": "not found at the supplier (HTTP 404)",
            "malformed": "supplier sent malformed JSON",
            "out-of-range": "stock -5 is not a non-negative integer",
        }[kind]
        assert expected in errors[sku], (sku, errors[sku])
    retried = {sku for sku, kind in DEMO_FAILURES.items() if kind in ("slow", "server-error")}
    for item in first.items.filter(product__sku__in=retried).select_related("product"):
        assert (item.status, item.attempts) == (RefreshItem.Status.SUCCEEDED, 2)
        assert len(demo_supplier.product_requests(item.product.sku)) == 2
    assert not PriceChange.objects.exists()  # first refresh: nothing to compare with

    second = refresh(products)

    assert (second.succeeded, second.failed) == (196, 4)
    expected_changes = {
        (
            p.sku,
            Decimal(supplier_record(p.sku)["price"]),
            Decimal(supplier_record(p.sku, 1)["price"]),
        )
        for p in products
        if p.sku not in permanent
        and supplier_record(p.sku)["price"] != supplier_record(p.sku, 1)["price"]
    }
    changes = set(
        PriceChange.objects.filter(run=second).values_list("product__sku", "old_price", "new_price")
    )
    assert changes == expected_changes
    assert 2 <= len(changes) <= 30  # a few percent of 196, not all
