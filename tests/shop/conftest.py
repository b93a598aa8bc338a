"""Small factories and helpers for the refresh workflow tests."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client

from shop.demo import demo_sku
from shop.models import Product, RefreshRun
from tests.support.factories import make_staff
from tests.support.waiting import wait_for


def make_products(count: int, start: int = 1, **fields) -> list[Product]:
    """Demo products the stand-in knows, with placeholder details a refresh replaces."""
    Product.objects.bulk_create(
        Product(sku=demo_sku(i), name=f"placeholder {i}", price=Decimal("1.00"), **fields)
        for i in range(start, start + count)
    )
    return list(Product.objects.filter(sku__in=[demo_sku(i) for i in range(start, start + count)]))


def csrf_client(user: User) -> Client:
    """A browser-like client: CSRF enforced, logged in."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_token(client: Client, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    assert match, "no CSRF token on the page"
    return match.group(1).decode()


def wait_finished(run: RefreshRun, timeout: float = 60) -> RefreshRun:
    def finished() -> RefreshRun | None:
        run.refresh_from_db()
        return run if run.is_finished and run.callback_status != "sending" else None

    return wait_for(finished, timeout=timeout, what=f"refresh run {run.pk} to finish")


@pytest.fixture
def refresher() -> User:
    return make_staff("refresher", "view_product", "refresh_product", "view_refreshrun")
