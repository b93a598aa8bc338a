"""Duplicate deliveries, large runs and the cron command, against real workers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from core.waiting import wait_for
from devtools.httpstub import Response
from proj.topology import CALLBACKS_QUEUE, REFRESH_QUEUE
from shop import services
from shop.models import Product, RefreshItem, RefreshRun
from shop.workflows import refresh_run_request
from tests.shop.conftest import make_products, wait_finished
from tests.support.settings_env import manage

pytestmark = pytest.mark.workers


@pytest.fixture
def held_queues(app, workers) -> Iterator[redis.Redis]:
    """Refresh and callback nodes stop consuming, so messages wait on the broker."""
    nodes = {
        REFRESH_QUEUE: workers.nodes("refresh"),
        CALLBACKS_QUEUE: workers.nodes("callbacks"),
    }
    for queue, destination in nodes.items():
        app.control.cancel_consumer(queue, destination=destination, reply=True)
    # A BRPOP already waiting still names the cancelled queue until its 1 s timeout ends
    # (kombu's brpop_timeout); let it expire so no message is taken by it.
    time.sleep(2.5)
    yield redis.Redis.from_url(settings.CELERY_BROKER_URL)
    for queue, destination in nodes.items():
        app.control.add_consumer(queue, destination=destination, reply=True)


def deliver_twice(app, broker: redis.Redis, queue: str, nodes: list[str]) -> str:
    """Put a second copy of the next message of `queue` right behind it, then consume."""
    raw = broker.lindex(queue, -1)  # kombu LPUSHes and BRPOPs: -1 is the next one out
    broker.rpush(queue, raw)
    app.control.add_consumer(queue, destination=nodes, reply=True)
    return json.loads(raw)["headers"]["id"]


def received(workers, pool: str, task_id: str) -> int:
    return workers.log_text(pool).count(f"[{task_id}] received")


def test_duplicate_chunk_and_callback_deliveries_send_one_callback(
    app, workers, supplier, held_queues
):
    products = make_products(6)
    run, _ = refresh_run_request(
        product_ids=[p.pk for p in products], trigger=RefreshRun.Trigger.COMMAND, chunk_size=2
    )
    wait_for(lambda: held_queues.llen(REFRESH_QUEUE) == 3, what="3 chunks on the broker")

    chunk_id = deliver_twice(app, held_queues, REFRESH_QUEUE, workers.nodes("refresh"))
    wait_for(lambda: held_queues.llen(CALLBACKS_QUEUE) == 1, what="the callback message")
    callback_id = deliver_twice(app, held_queues, CALLBACKS_QUEUE, workers.nodes("callbacks"))
    run = wait_finished(run)

    wait_for(lambda: received(workers, "refresh", chunk_id) == 2, what="chunk delivered twice")
    wait_for(lambda: received(workers, "callbacks", callback_id) == 2, what="callback twice")
    assert run.status == RefreshRun.Status.SUCCEEDED
    assert (run.total, run.succeeded, run.failed) == (6, 6, 0)
    assert {r.path for r in supplier.product_requests()} == {f"/products/{p.sku}" for p in products}
    [callback] = supplier.callbacks()
    assert callback.json()["succeeded"] == 6


def test_a_second_delivery_does_not_ask_before_the_suppliers_retry_after(app, workers, supplier):
    """A copy of a chunk arriving while its product waits out Retry-After sends it back to
    wait, instead of asking the supplier again at once."""
    [product] = make_products(1)
    # Retry-After 2 s: the tests' SUPPLIER_RETRY_BACKOFF_MAX, which caps it.
    supplier.script(product.sku, Response(429, {}, headers={"Retry-After": "2"}))
    run, _ = refresh_run_request(product_ids=[product.pk], trigger=RefreshRun.Trigger.COMMAND)
    item = RefreshItem.objects.get(run=run)
    wait_for(lambda: RefreshItem.objects.filter(pk=item.pk, attempts=1).exists())

    app.send_task(  # the same chunk again, as a redelivery would bring it
        "shop.tasks.product_refresh_chunk", kwargs={"run_id": run.pk, "product_ids": [product.pk]}
    )
    run = wait_finished(run)

    first, *later = supplier.product_requests(product.sku)
    # Not before 2 s, but for the half second a retry may run early (RETRY_EARLY_BY).
    assert later and all(r.received_at - first.received_at >= 1.5 for r in later)
    assert run.status == RefreshRun.Status.SUCCEEDED
    assert len(supplier.callbacks()) == 1


def test_a_2000_product_run_completes(workers, supplier):
    products = make_products(2000)
    run, _ = refresh_run_request(
        product_ids=[p.pk for p in products], trigger=RefreshRun.Trigger.COMMAND
    )

    run = wait_finished(run, timeout=240)

    assert run.status == RefreshRun.Status.SUCCEEDED
    assert run.succeeded == 2000
    assert RefreshItem.objects.filter(run=run, status="succeeded").count() == 2000
    assert not Product.objects.filter(last_refreshed_at__isnull=True).exists()
    [callback] = supplier.callbacks()
    assert callback.json() | {"started_at": None, "finished_at": None} == {
        "run": run.pk, "status": "succeeded", "total": 2000, "succeeded": 2000, "failed": 0,
        "cancelled": 0, "failed_skus": [], "failed_skus_total": 0,
        "started_at": None, "finished_at": None,
    }  # fmt: skip


def test_cron_command_waits_and_exits_zero_on_success(workers, supplier):
    products = make_products(3)

    result = manage("refresh_products", "--wait", env=workers.env)

    assert result.returncode == 0, result.stderr
    run = RefreshRun.objects.get()
    assert f"Started refresh run {run.pk} for 3 products." in result.stdout
    # Not a terminal (cron): plain lines, no carriage returns, a one-line summary last.
    assert "\r" not in result.stdout and "Progress: " in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"Run {run.pk} succeeded: 3 refreshed, 0 failed, in ")
    assert last.endswith("Callback: delivered (HTTP 200).")
    assert run.trigger == "command"
    assert {p.sku for p in products} == {
        r.path.rsplit("/", 1)[1] for r in supplier.product_requests()
    }


def test_cron_command_exits_non_zero_when_products_fail(workers, supplier):
    products = make_products(2)
    supplier.script(products[0].sku, Response(404, {}))

    result = manage("refresh_products", "--sku", products[0].sku, products[1].sku, "--wait",
                    env=workers.env)  # fmt: skip

    assert result.returncode == 1
    assert f"{products[0].sku}: not found at the supplier (HTTP 404)" in result.stderr
    assert RefreshRun.objects.get().status == RefreshRun.Status.COMPLETED_WITH_ERRORS


def test_cron_command_refreshes_only_stale_products(workers, supplier):
    from django.utils import timezone

    make_products(2)
    Product.objects.filter(sku="DEMO-00001").update(last_refreshed_at=timezone.now())

    result = manage("refresh_products", "--stale-after", "24", "--wait", env=workers.env)

    assert result.returncode == 0, result.stderr
    assert RefreshRun.objects.get().total == 1
    assert [r.path for r in supplier.product_requests()] == ["/products/DEMO-00002"]


def test_stale_after_zero_means_every_product(workers, supplier):
    from django.utils import timezone

    make_products(2)
    Product.objects.update(last_refreshed_at=timezone.now())

    result = manage("refresh_products", "--stale-after", "0", env=workers.env)

    assert result.returncode == 0, result.stderr
    assert RefreshRun.objects.get().total == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--sku", "NOPE-1"], "Unknown SKU(s): NOPE-1. Nothing started."),
        (["--stale-after", "-1"], "argument --stale-after: invalid non_negative value: '-1'"),
        (["--stale-after", "soon"], "argument --stale-after: invalid non_negative value: 'soon'"),
        (["--sku", "X", "--stale-after", "3"], "not allowed with argument"),
    ],
)
def test_cron_command_rejects_bad_options_and_starts_nothing(workers, supplier, args, message):
    make_products(1)

    result = manage("refresh_products", *args, env=workers.env)

    assert result.returncode != 0
    assert message in result.stderr
    assert RefreshRun.objects.count() == 0


@pytest.mark.django_db
def test_a_chunk_touches_only_its_own_products_when_others_lie_between_them(supplier, settings):
    """A resumed duplicate's retry can name products with another chunk's between them:
    the chunk reads its items by id range, and must still refresh only the ones it names.
    Called in the test process: the service is a plain function; the supplier is real HTTP.
    """
    settings.SUPPLIER_API_URL = supplier.server.url
    products = make_products(5)
    run, _ = refresh_run_request(
        product_ids=[p.pk for p in products], trigger=RefreshRun.Trigger.COMMAND
    )
    mine, others = products[0::2], products[1::2]
    empty = services.product_refresh_chunk(run_id=run.pk, product_ids=[])  # a malformed message
    assert empty.summary() == {"succeeded": 0, "failed": 0, "retrying": 0}

    outcome = services.product_refresh_chunk(run_id=run.pk, product_ids=[p.pk for p in mine])

    assert outcome.summary() == {"succeeded": 3, "failed": 0, "retrying": 0}
    items = dict(run.items.values_list("product_id", "status"))
    assert {items[p.pk] for p in mine} == {RefreshItem.Status.SUCCEEDED}
    assert {items[p.pk] for p in others} == {RefreshItem.Status.PENDING}
    assert {r.path for r in supplier.product_requests()} == {f"/products/{p.sku}" for p in mine}
    names = dict(Product.objects.values_list("pk", "name"))
    assert all(names[p.pk].startswith("placeholder") for p in others)
    assert not any(names[p.pk].startswith("placeholder") for p in mine)
    run.refresh_from_db()
    assert (run.succeeded, run.failed) == (3, 0)
