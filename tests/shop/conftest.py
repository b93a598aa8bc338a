"""Small factories and helpers for the refresh workflow tests."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from core.waiting import wait_for
from devtools.demo import demo_sku
from shop.models import Product, RefreshRun
from tests.support.admin import csrf_client, csrf_token, post_action
from tests.support.factories import make_staff
from tests.support.smtp import smtp  # noqa: F401  (the SMTP sink fixture; a refresh with errors mails)

__all__ = ["CHANGELIST", "csrf_client", "csrf_token", "make_products", "run_action"]


def make_products(count: int, start: int = 1, **fields) -> list[Product]:
    """Demo products the stand-in knows, with placeholder details a refresh replaces."""
    Product.objects.bulk_create(
        Product(sku=demo_sku(i), name=f"placeholder {i}", price=Decimal("1.00"), **fields)
        for i in range(start, start + count)
    )
    return list(Product.objects.filter(sku__in=[demo_sku(i) for i in range(start, start + count)]))


CHANGELIST = reverse("admin:shop_product_changelist")


def run_action(client: Client, products: list[Product]):
    """Select `products` in the changelist and run the refresh action, as a browser would."""
    return post_action(client, CHANGELIST, "refresh_from_supplier", products)


def wait_finished(run: RefreshRun, timeout: float = 60) -> RefreshRun:
    def finished() -> RefreshRun | None:
        run.refresh_from_db()
        return run if run.is_settled else None

    return wait_for(finished, timeout=timeout, what=f"refresh run {run.pk} to finish")


@pytest.fixture
def refresher() -> User:
    return make_staff("refresher", "view_product", "refresh_product", "view_refreshrun")
