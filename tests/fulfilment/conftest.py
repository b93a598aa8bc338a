"""Fulfilment fixtures: orders, the warehouse and carrier stand-ins, waiting for shipments."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from core.waiting import wait_for
from devtools.fulfilment_stub import CarrierStub, WarehouseStub
from fulfilment.models import Fulfilment, FulfilmentBatch
from shop.models import Order, OrderLine, Product
from tests.support.smtp import smtp  # noqa: F401  (the SMTP sink: shipping mails the customer)

_numbers = itertools.count(1)
FINAL = [Fulfilment.Status.SHIPPED, Fulfilment.Status.FAILED, Fulfilment.Status.CANCELLED]


@pytest.fixture
def warehouse(warehouse_server: WarehouseStub) -> WarehouseStub:
    warehouse_server.reset()
    return warehouse_server


@pytest.fixture
def carrier(carrier_server: CarrierStub) -> CarrierStub:
    carrier_server.reset()
    return carrier_server


def make_orders(count: int, prefix: str = "FUL") -> list[Order]:
    """Placed orders with one line each, unique references and customer addresses."""
    product, _ = Product.objects.get_or_create(
        sku="FUL-SKU", defaults={"name": "Parcel tape", "price": Decimal("3.50")}
    )
    orders = []
    for _ in range(count):
        n = next(_numbers)
        order = Order.objects.create(
            reference=f"{prefix}-{n:05d}",
            customer_email=f"customer{n}@fulfil.example",
            placed_at="2026-01-01T10:00:00Z",
        )
        OrderLine.objects.create(order=order, product=product, quantity=2, unit_price=product.price)
        orders.append(order)
    return orders


def wait_final(orders: list[Order], timeout: float = 30) -> dict[str, Fulfilment]:
    """Wait until every order shipped, failed or was cancelled; their rows by reference."""
    ids = [o.pk for o in orders]

    def done() -> dict[str, Fulfilment] | None:
        rows = Fulfilment.objects.filter(order_id__in=ids, status__in=FINAL).select_related("order")
        found = {f.order.reference: f for f in rows}
        return found if len(found) == len(ids) else None

    return wait_for(done, timeout=timeout, interval=0.1, what=f"{len(ids)} orders to finish")


def wait_batch_settled(batch: FulfilmentBatch, timeout: float = 30) -> FulfilmentBatch:
    def settled() -> FulfilmentBatch | None:
        batch.refresh_from_db()
        return batch if batch.is_finished else None

    return wait_for(settled, timeout=timeout, interval=0.1, what=f"{batch} to settle")
