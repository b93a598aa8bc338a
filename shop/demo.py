"""Deterministic demo catalogue: the supplier stand-in serves it, seed_demo loads it."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

DEMO_PREFIX = "DEMO-"
_WORDS = ["Oak", "Linen", "Steel", "Cotton", "Ceramic", "Walnut", "Wool", "Glass", "Copper"]
_THINGS = ["Chair", "Lamp", "Mug", "Blanket", "Shelf", "Vase", "Table", "Rug", "Kettle"]


def demo_sku(index: int) -> str:
    return f"{DEMO_PREFIX}{index:05d}"


def supplier_record(sku: str) -> dict[str, Any]:
    """What the supplier says about `sku`: the same answer every time for the same sku."""
    rng = random.Random(sku)
    name = f"{rng.choice(_WORDS)} {rng.choice(_THINGS)}"
    return {
        "sku": sku,
        "name": name,
        "description": f"{name}, supplied by Acme Wholesale.",
        "price": f"{Decimal(rng.randint(300, 25000)) / 100:.2f}",
        "currency": "EUR",
        "stock": rng.randint(0, 120),
        "warehouse": rng.choice(["AMS", "BER", "LYS"]),
    }


def seed(products: int = 200, orders: int = 300, days: int = 60) -> tuple[int, int]:
    """Create demo products (stale: never refreshed) and orders over the last `days` days."""
    from django.db import transaction
    from django.utils import timezone

    from shop.models import Order, OrderLine, Product

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
        if Order.objects.exists():
            return products, 0
        catalogue = list(Product.objects.filter(sku__startswith=DEMO_PREFIX))
        now = timezone.now()
        for n in range(1, orders + 1):
            order = Order.objects.create(
                reference=f"ORD-{n:06d}",
                customer_email=f"customer{rng.randint(1, 80)}@example.com",
                status=rng.choice(list(Order.Status.values)),
                placed_at=now - timedelta(days=rng.uniform(0, days)),
            )
            OrderLine.objects.bulk_create(
                OrderLine(
                    order=order,
                    product=product,
                    quantity=rng.randint(1, 4),
                    unit_price=Decimal(supplier_record(product.sku)["price"]),
                )
                for product in rng.sample(catalogue, k=rng.randint(1, 3))
            )
    return products, orders
