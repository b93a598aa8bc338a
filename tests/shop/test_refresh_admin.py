"""The refresh workflow as staff use it: admin action -> real workers -> supplier stand-in."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from core.waiting import wait_for
from devtools.demo import supplier_record
from devtools.httpstub import Response
from shop.models import PriceChange, Product, RefreshRun
from tests.shop.conftest import (
    CHANGELIST,
    csrf_client,
    make_products,
    run_action,
    wait_finished,
)
from tests.support.admin import post_action
from tests.support.factories import make_staff

pytestmark = pytest.mark.workers


def test_admin_action_refreshes_products_and_calls_back_once(workers, supplier, refresher):
    products = make_products(3)
    client = csrf_client(refresher)

    page = run_action(client, products)

    run = RefreshRun.objects.get()
    assert f'<a href="{run.get_absolute_url()}">refresh run #{run.pk}</a>' in page.text
    assert "for 3 products" in page.text
    run = wait_finished(run)
    assert run.status == RefreshRun.Status.SUCCEEDED
    assert (run.total, run.succeeded, run.failed) == (3, 3, 0)
    assert run.requested_by == refresher and run.trigger == "admin"
    for product in Product.objects.all():
        expected = supplier_record(product.sku)
        assert product.name == expected["name"]
        assert product.price == Decimal(expected["price"])
        assert product.stock == expected["stock"]
        assert product.supplier_details["warehouse"] == expected["warehouse"]
        assert product.last_refreshed_at and not product.last_error

    [callback] = supplier.callbacks()
    assert callback.json()["run"] == run.pk
    assert callback.json()["status"] == "succeeded"
    assert callback.json()["succeeded"] == 3 and callback.json()["failed_skus"] == []
    assert callback.headers["idempotency-key"] == f"refresh-run-{run.pk}"
    assert run.callback_state == "delivered" and run.callback_detail == "delivered (HTTP 200)"

    detail = client.get(run.get_absolute_url()).text
    assert "3 / 3 done" in detail and "Delivered: delivered (HTTP 200)" in detail
    assert "Succeeded: 3 products" in detail
    assert re.search(r"Finished at:.*?\d{2}:\d{2}:\d{2}", detail, re.S)  # times with seconds
    assert re.search(r"Took:.*?\d+\.\d s", detail, re.S)  # durations read "0.4 s"
    assert "Failed products" not in detail and "Interventions" not in detail  # no empty tables


def test_staff_without_permission_see_no_action_and_a_forged_post_starts_nothing(workers, supplier):
    viewer = make_staff("viewer", "view_product")
    products = make_products(2)
    client = csrf_client(viewer)

    assert "Refresh details from supplier" not in client.get(CHANGELIST).text
    page = run_action(client, products)

    assert page.status_code == 200
    assert "You do not have permission to “Refresh details from supplier”: nothing was " in (
        page.text
    )
    assert RefreshRun.objects.count() == 0
    assert supplier.product_requests() == []


def test_a_forged_post_without_csrf_token_is_refused(workers, supplier, refresher):
    products = make_products(1)
    client = csrf_client(refresher)
    reply = client.post(
        CHANGELIST, {"action": "refresh_from_supplier", "_selected_action": [products[0].pk]}
    )
    assert reply.status_code == 403
    assert RefreshRun.objects.count() == 0


def test_an_unknown_product_completes_the_run_with_errors_and_tells_the_receiver(
    workers, supplier, refresher
):
    products = make_products(3)
    supplier.script(products[1].sku, Response(404, {"error": "unknown sku"}))
    client = csrf_client(refresher)

    run_action(client, products)
    run = wait_finished(RefreshRun.objects.get())

    assert run.status == RefreshRun.Status.COMPLETED_WITH_ERRORS
    assert (run.succeeded, run.failed) == (2, 1)
    [callback] = supplier.callbacks()
    assert callback.json() | {"started_at": None, "finished_at": None} == {
        "run": run.pk, "status": "completed_with_errors", "total": 3, "succeeded": 2,
        "failed": 1, "cancelled": 0, "failed_skus": [products[1].sku], "failed_skus_total": 1,
        "started_at": None, "finished_at": None,
    }  # fmt: skip
    assert run.callback_state == "delivered"
    failed = Product.objects.get(pk=products[1].pk)
    assert failed.last_error == "not found at the supplier (HTTP 404)"
    assert failed.last_refreshed_at is None
    assert len(supplier.product_requests(failed.sku)) == 1  # permanent: not retried
    detail = client.get(run.get_absolute_url()).text
    assert f"{failed.sku}: not found at the supplier (HTTP 404)" in detail
    assert "3 / 3 done, 1 failed" in detail and "Completed with 1 error" in detail


def test_a_server_error_then_success_is_retried_and_succeeds(workers, supplier, refresher):
    [product] = make_products(1)
    supplier.script(product.sku, Response(500, {"error": "boom"}))

    run_action(csrf_client(refresher), [product])
    run = wait_finished(RefreshRun.objects.get())

    assert run.status == RefreshRun.Status.SUCCEEDED
    assert len(supplier.product_requests(product.sku)) == 2
    assert len(supplier.callbacks()) == 1


def test_a_slow_product_does_not_hold_the_rest_of_its_chunk(workers, supplier, refresher):
    """The run page counts the quick products while the supplier still owes the slow one."""
    products = make_products(10)
    slow = products[-1]
    # Near the tests' 1 s read timeout (answered or timed out, the run succeeds); the
    # workers write what answered every 0.1 s, so the page can be caught in between.
    supplier.script(slow.sku, Response(200, supplier_record(slow.sku), delay=0.9))
    client = csrf_client(refresher)
    run_action(client, products)
    run = RefreshRun.objects.get()

    def nine_done_with_the_slow_one_unanswered() -> bool:
        page = client.get(run.get_absolute_url()).text  # first the page, then the supplier
        return "Running: 9 / 10 done" in page and supplier.server.in_flight == 1

    wait_for(nine_done_with_the_slow_one_unanswered, timeout=10, interval=0.02)
    run = wait_finished(run)

    assert run.status == RefreshRun.Status.SUCCEEDED and run.succeeded == 10
    assert "Succeeded: 10 products" in client.get(run.get_absolute_url()).text
    assert len(supplier.callbacks()) == 1


def test_rate_limited_with_retry_after_is_retried(workers, supplier, refresher):
    [product] = make_products(1)
    supplier.script(product.sku, Response(429, {}, headers={"Retry-After": "1"}))

    run_action(csrf_client(refresher), [product])
    run = wait_finished(RefreshRun.objects.get())

    first, second = supplier.product_requests(product.sku)
    assert second.received_at - first.received_at >= 1.0
    assert run.status == RefreshRun.Status.SUCCEEDED


def test_a_supplier_that_keeps_timing_out_fails_after_bounded_retries(workers, supplier, refresher):
    [product] = make_products(1)
    slow = Response(200, supplier_record(product.sku), delay=2.5)  # read timeout is 1 s
    supplier.script(product.sku, slow, slow, slow, slow)

    run_action(csrf_client(refresher), [product])
    run = wait_finished(RefreshRun.objects.get())

    assert run.status == RefreshRun.Status.FAILED
    assert len(supplier.product_requests(product.sku)) == 3  # first try + 2 retries
    assert supplier.callbacks()[0].json()["status"] == "failed"
    error = Product.objects.get().last_error
    assert error.startswith("supplier timed out") and "gave up after 3 attempts" in error


@pytest.mark.parametrize(
    "body,message",
    [
        ("{not json", "supplier sent malformed JSON"),
        (
            {
                "sku": "DEMO-00001",
                "name": "X",
                "description": "",
                "currency": "EUR",
                "price": 12.5,
                "stock": 1,
            },
            "price 12.5 is not a decimal string",
        ),
        (
            {
                "sku": "DEMO-00001",
                "name": "X",
                "description": "",
                "currency": "EUR",
                "price": "1.00",
                "stock": -3,
            },
            "stock -3 is not a non-negative integer",
        ),
    ],
)
def test_a_malformed_answer_is_recorded_without_retry(workers, supplier, refresher, body, message):
    [product] = make_products(1)
    supplier.script(product.sku, Response(200, body))

    run_action(csrf_client(refresher), [product])
    run = wait_finished(RefreshRun.objects.get())

    assert run.status == RefreshRun.Status.FAILED
    assert len(supplier.product_requests(product.sku)) == 1
    product.refresh_from_db()
    assert message in product.last_error
    assert product.name == "placeholder 1"  # nothing half-applied


def test_retry_failed_products_starts_a_new_run_for_them_only(workers, supplier, refresher):
    products = make_products(3)
    supplier.script(products[0].sku, Response(404, {}))
    client = csrf_client(refresher)
    run_action(client, products)
    first = wait_finished(RefreshRun.objects.get())
    assert first.status == RefreshRun.Status.COMPLETED_WITH_ERRORS

    changelist = reverse("admin:shop_refreshrun_changelist")
    page = post_action(client, changelist, "retry_failed", [first])

    retry = RefreshRun.objects.exclude(pk=first.pk).get()
    assert f"for 1 failed product of run #{first.pk}" in page.text
    assert retry.rerun_of == first and retry.total == 1
    retry = wait_finished(retry)
    assert retry.status == RefreshRun.Status.SUCCEEDED
    assert len(supplier.product_requests(products[0].sku)) == 2


def test_a_changed_price_is_recorded(workers, supplier, refresher):
    [product] = make_products(1)
    run_action(csrf_client(refresher), [product])
    wait_finished(RefreshRun.objects.get())
    new_record = {**supplier_record(product.sku), "price": "999.99"}
    supplier.catalogue[product.sku] = new_record

    run_action(csrf_client(refresher), [product])
    second = wait_finished(RefreshRun.objects.latest("pk"))

    change = PriceChange.objects.get()
    assert change.old_price == Decimal(supplier_record(product.sku)["price"])
    assert change.new_price == Decimal("999.99") and change.run == second
