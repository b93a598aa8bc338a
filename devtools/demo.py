"""Deterministic demo catalogue: the supplier stand-in serves it, seed_demo loads it."""

from __future__ import annotations

import functools
import hashlib
import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

DEMO_PREFIX = "DEMO-"
# In the stand-in's demo mode, the share of products whose price moves in a refresh round.
DRIFT_SHARE = 0.05
_WORDS = ["Oak", "Linen", "Steel", "Cotton", "Ceramic", "Walnut", "Wool", "Glass", "Copper"]
_THINGS = ["Chair", "Lamp", "Mug", "Blanket", "Shelf", "Vase", "Table", "Rug", "Kettle"]


def demo_sku(index: int) -> str:
    return f"{DEMO_PREFIX}{index:05d}"


def supplier_record(sku: str, rounds: int = 0) -> dict[str, Any]:
    """What the supplier says about `sku`: the same answer every time for the same sku.

    `rounds` > 0 is for the stand-in's demo mode: the price as it has drifted after that
    many refresh rounds (see drifted_price); with 0 it is the catalogue price.
    """
    return dict(_supplier_record(sku, rounds))  # a copy: callers may change theirs


# Seeding a Random per call costs more than the rest of a stand-in answer; a bench run asks
# for each of a few thousand SKUs many times.
@functools.lru_cache(maxsize=20_000)
def _supplier_record(sku: str, rounds: int) -> dict[str, Any]:
    rng = random.Random(sku)
    name = f"{rng.choice(_WORDS)} {rng.choice(_THINGS)}"
    cents = rng.randint(300, 25000)
    return {
        "sku": sku,
        "name": name,
        "description": f"{name}, supplied by Acme Wholesale.",
        "price": f"{Decimal(drifted_price(sku, cents, rounds)) / 100:.2f}",
        "currency": "EUR",
        "stock": rng.randint(0, 120),
        "warehouse": rng.choice(["AMS", "BER", "LYS"]),
    }


def drifted_price(sku: str, cents: int, rounds: int) -> int:
    """`cents` after `rounds` rounds in which about DRIFT_SHARE of products move 2-15 %.

    Deterministic in (sku, round), across processes too (a hash, not hash()), so a demo
    refresh shows a few price changes and a test can predict them.
    """
    for r in range(1, rounds + 1):
        digest = hashlib.blake2b(f"{sku}/{r}".encode(), digest_size=8).digest()
        moves, size, direction = digest[0] | digest[1] << 8, digest[2], digest[3] & 1
        if moves >= DRIFT_SHARE * 65536:
            continue
        step = max(1, round(cents * (2 + 13 * size / 255) / 100))
        cents = max(100, cents - step) if direction else cents + step
    return cents


_FIRST = ["Ada", "Ben", "Chloe", "Dev", "Elif", "Femi", "Greta", "Hugo", "Ines", "Jon",
          "Kai", "Lena", "Milo", "Nora", "Omar", "Pia"]  # fmt: skip
_LAST = ["Baker", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat", "Ivanova",
         "Jansen", "Kowalski", "Larsen"]  # fmt: skip
# Demo customers who agreed to marketing email: most, not all (the rest are suppressed).
OPT_IN_SHARE = 0.7


def demo_customer_email(index: int) -> str:
    return f"customer{index}@example.com"


def seed_customers(count: int) -> int:
    """Create demo customers 1..count that do not exist yet; how many were created."""
    from shop.models import Customer

    rng = random.Random(7)
    existing = set(Customer.objects.values_list("email", flat=True))
    fresh = []
    for i in range(1, count + 1):
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        opted_in = rng.random() < OPT_IN_SHARE
        email = demo_customer_email(i)
        if email not in existing:
            fresh.append(Customer(email=email, name=name, marketing_opt_in=opted_in))
    Customer.objects.bulk_create(fresh, batch_size=2000)
    return len(fresh)


SEED_BATCH = 2000


def seed(
    products: int = 200, orders: int = 300, days: int = 60, customers: int = 3000
) -> tuple[int, int]:
    """Create demo products (stale: never refreshed), customers (most opted in to marketing)
    and orders by them over the last `days` days.
    """
    from django.db import transaction
    from django.utils import timezone

    from shop.models import Customer, Order, OrderLine, Product

    rng = random.Random(42)
    with transaction.atomic():
        existing = set(Product.objects.values_list("sku", flat=True))
        Product.objects.bulk_create(
            [
                Product(sku=sku, name=f"Demo product {sku}", price=Decimal("1.00"), stock=5)
                for sku in (demo_sku(i) for i in range(1, products + 1))
                if sku not in existing
            ]
        )
        seed_customers(customers)
        if Order.objects.exists():
            return products, 0
        catalogue = list(Product.objects.filter(sku__startswith=DEMO_PREFIX))
        buyers = list(Customer.objects.order_by("pk")[: max(1, min(customers, 800))])
        now = timezone.now()
        statuses = list(Order.Status.values)
        prices = {p.pk: Decimal(supplier_record(p.sku)["price"]) for p in catalogue}
        for first in range(1, orders + 1, SEED_BATCH):  # in batches: a year of orders is big
            batch = []
            for n in range(first, min(first + SEED_BATCH, orders + 1)):
                buyer = rng.choice(buyers)
                batch.append(
                    Order(
                        reference=f"ORD-{n:06d}",
                        customer=buyer,
                        customer_email=buyer.email,
                        status=rng.choice(statuses),
                        placed_at=now - timedelta(days=rng.uniform(0, days)),
                    )
                )
            Order.objects.bulk_create(batch)  # sets the pks (RETURNING)
            OrderLine.objects.bulk_create(
                [
                    OrderLine(
                        order=order,
                        product=product,
                        quantity=rng.randint(1, 4),
                        unit_price=prices[product.pk],
                    )
                    for order in batch
                    for product in rng.sample(catalogue, k=rng.randint(1, 3))
                ],
                batch_size=SEED_BATCH,
            )
    return products, orders
