"""Report fixtures: a small shop whose report numbers are easy to compute by hand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from tests.support.factories import make_staff

# The "report ready" emails go over SMTP to the session's sink (the workers' settings are
# pointed at it when this module is imported, before the fleet starts).
from tests.support.smtp import smtp  # noqa: F401

RANGE = {"date_from": "2026-03-01", "date_to": "2026-03-10"}


def at(day: str, hour: int = 12, minute: int = 0) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC).replace(
        hour=hour, minute=minute
    )


@dataclass
class Shop:
    products: dict[str, object]


def make_product(sku: str, price: str, stock: int, currency: str = "EUR"):
    from shop.models import Product

    return Product.objects.create(
        sku=sku, name=f"Product {sku}", price=Decimal(price), stock=stock, currency=currency
    )


def make_order(ref: str, placed_at: datetime, status: str, lines: list[tuple[object, int, str]]):
    from shop.models import Order, OrderLine

    order = Order.objects.create(
        reference=ref, customer_email="c@example.com", status=status, placed_at=placed_at
    )
    for product, qty, price in lines:
        OrderLine.objects.create(order=order, product=product, quantity=qty, unit_price=price)
    return order


@pytest.fixture
def shop() -> Shop:
    """Four products, six orders (one cancelled, two outside the range), three price changes.

    Hand-computed for 2026-03-01..2026-03-10 (see the tests for the expected numbers).
    """
    from shop.models import PriceChange

    a = make_product("A-1", "10.00", 3)
    b = make_product("B-2", "2.50", 40)
    c = make_product("C-3", "100.00", 0, "USD")
    d = make_product("D-4", "7.00", 2, "USD")
    make_order("O1", at("2026-03-02", 10), "paid", [(a, 2, "10.00"), (b, 1, "2.50")])
    make_order("O2", at("2026-03-02", 15), "shipped", [(c, 1, "100.00")])
    make_order("O3", at("2026-03-05", 9), "cancelled", [(a, 5, "10.00")])
    make_order("O4", at("2026-03-09", 23, 30), "placed", [(b, 4, "2.50")])
    make_order("O5", at("2026-02-28", 23, 59), "paid", [(a, 1, "10.00")])
    make_order("O6", at("2026-03-11", 0, 0), "paid", [(d, 1, "7.00")])
    PriceChange.objects.create(
        product=a, old_price="9.00", new_price="10.00", changed_at=at("2026-03-03")
    )
    PriceChange.objects.create(
        product=b, old_price="3.00", new_price="2.50", changed_at=at("2026-03-08")
    )
    PriceChange.objects.create(
        product=c, old_price="90.00", new_price="100.00", changed_at=at("2026-02-01")
    )
    return Shop(products={"A": a, "B": b, "C": c, "D": d})


REQUESTER = ("add_reportrun", "view_reportrun")


@pytest.fixture
def staff(db):
    """The requester: staff who may request reports (add/view) but not see everyone's."""
    return make_staff("alice", *REQUESTER)


@pytest.fixture
def other_staff(db):
    return make_staff("bob", *REQUESTER)


@pytest.fixture
def auditor(db):
    """Staff allowed to view every report."""
    return make_staff("carol", "view_all_reports")
