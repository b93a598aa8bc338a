"""Customers: migrated from orders, demo data, admin search; the refresh tells its requester."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

import pytest
from django.apps import apps
from django.urls import reverse

from core.waiting import wait_for
from devtools import demo
from devtools.httpstub import Response
from shop.models import Customer, Order, RefreshRun
from tests.shop.conftest import csrf_client, make_products, run_action, wait_finished
from tests.support.factories import make_staff

migration = importlib.import_module("shop.migrations.0004_orders_to_customers")


@pytest.mark.django_db
def test_migration_turns_order_addresses_into_customers_linked_to_their_orders():
    placed = datetime(2026, 3, 1, tzinfo=UTC)
    for ref, email in [("A", "Ann@Example.com"), ("B", "ann@example.com "), ("C", "bo@x.org")]:
        Order.objects.create(reference=ref, customer_email=email, placed_at=placed)

    migration.forwards(apps, None)

    ann, bo = Customer.objects.order_by("email")
    assert (ann.email, bo.email) == ("ann@example.com", "bo@x.org")
    assert not ann.marketing_opt_in and not bo.marketing_opt_in  # nobody consented before
    assert sorted(ann.orders.values_list("reference", flat=True)) == ["A", "B"]
    assert Order.objects.get(reference="A").customer_email == "Ann@Example.com"  # kept as placed


@pytest.mark.django_db
def test_demo_data_has_customers_most_of_them_opted_in(admin_client):
    demo.seed(products=5, orders=20, customers=200)
    assert Customer.objects.count() == 200
    opted_in = Customer.objects.filter(marketing_opt_in=True).count()
    assert 100 < opted_in < 200
    assert not Order.objects.filter(customer__isnull=True).exists()
    demo.seed(products=5, orders=20, customers=200)  # idempotent
    assert Customer.objects.count() == 200

    page = admin_client.get(reverse("admin:shop_customer_changelist"), {"q": "customer17@"})
    assert "customer17@example.com" in page.text and "customer18@example.com" not in page.text


@pytest.mark.workers
def test_a_refresh_with_errors_emails_its_requester(workers, supplier, smtp):
    products = make_products(2)
    supplier.script(products[0].sku, Response(404, {}))
    requester = make_staff("ria", "view_product", "refresh_product", "view_refreshrun")

    run_action(csrf_client(requester), products)
    run = wait_finished(RefreshRun.objects.get())

    assert run.status == RefreshRun.Status.COMPLETED_WITH_ERRORS
    [mail] = wait_for(lambda: smtp.messages(to="ria@example.com"), what="the email")
    assert mail.subject == f"Refresh run #{run.pk} finished with errors: 1 of 2 products failed"
    assert f"{products[0].sku}: not found at the supplier (HTTP 404)" in mail.body
    assert f"http://127.0.0.1:8000/admin/shop/refreshrun/{run.pk}/change/" in mail.body


@pytest.mark.django_db
def test_an_orders_page_names_the_product_of_each_line(admin_client, django_assert_max_num_queries):
    demo.seed(products=3, orders=1, customers=1)
    order = Order.objects.get()
    line = order.lines.select_related("product").first()
    url = reverse("admin:shop_order_change", args=[order.pk])
    with django_assert_max_num_queries(30):  # not one more query per line
        page = admin_client.get(url)
    assert page.status_code == 200
    assert f"{line.quantity} x {line.product.sku}" in page.content.decode()
