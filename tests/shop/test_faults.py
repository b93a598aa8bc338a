"""Runs always finish: each fault induced on a real service, then shown recovered.

A killed node, messages lost from the broker, a corrupted chunk, a callback receiver that
never answers, cancel and resume from the admin, a warm shutdown. The broker-down and
PostgreSQL faults live in test_outages.py.
"""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
import redis
from django.conf import settings
from django.urls import reverse

from core.models import DeadLetter, RunEvent
from core.waiting import wait_for
from devtools.supplier_stub import StubBehaviour
from proj.topology import REFRESH_QUEUE
from shop import services
from shop.models import Product, RefreshItem, RefreshRun
from shop.workflows import refresh_run_request
from tests.shop.conftest import csrf_client, make_products, wait_finished
from tests.support.admin import post_action
from tests.support.factories import make_staff
from tests.support.faults import Reconciler
from tests.support.settings_env import manage

pytestmark = pytest.mark.workers
RUNS = reverse("admin:shop_refreshrun_changelist")


def start(products: list[Product], **options) -> RefreshRun:
    run, _ = refresh_run_request(
        product_ids=[p.pk for p in products], trigger=RefreshRun.Trigger.COMMAND, **options
    )
    return run


def events(run: RefreshRun) -> list[str]:
    return [e.kind for e in RunEvent.objects.filter(object_id=run.pk).order_by("at")]


def reconciler(workers) -> Reconciler:
    return Reconciler(workers.env, workers.log_dir / "reconciler.log", stall=3)


def test_a_killed_refresh_node_is_recovered_by_the_reconciler(workers, supplier):
    products = make_products(200)
    supplier.reset(StubBehaviour(latency=1.0))  # 50 per chunk, 10 at a time: ~5 s a chunk
    run = start(products, chunk_size=50)
    wait_for(lambda: supplier.product_requests(), what="chunks to be in flight")

    workers.kill("refresh")  # kill -9: nothing acknowledged, nothing written
    run.refresh_from_db()
    assert run.status == RefreshRun.Status.RUNNING and run.succeeded == 0
    supplier.behaviour.latency = 0.0
    workers.restart("refresh")
    # Restarting alone brings nothing back (the messages are unacked in Redis for the
    # visibility timeout): the reconciler finds the run stalled and re-publishes its work.
    with reconciler(workers):
        run = wait_finished(run, timeout=90)

    assert run.status == RefreshRun.Status.SUCCEEDED and run.succeeded == 200
    attempts = set(RefreshItem.objects.filter(run=run).values_list("attempts", flat=True))
    assert attempts == {1}  # every product written once
    assert "resumed" in events(run)
    [callback] = supplier.callbacks()
    assert callback.json()["status"] == "succeeded" and callback.json()["succeeded"] == 200


def test_messages_lost_from_the_broker_are_published_again(workers, supplier):
    products = make_products(150)
    supplier.reset(StubBehaviour(latency=0.5))
    run = start(products, chunk_size=1)  # 150 tasks: most of them wait on the broker
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    wait_for(lambda: broker.llen(REFRESH_QUEUE) > 50, what="a backlog on the broker")

    broker.flushdb()  # as a Redis restarted without persistence: queued messages are gone
    with reconciler(workers):
        run = wait_finished(run, timeout=120)

    assert run.status == RefreshRun.Status.SUCCEEDED and run.succeeded == 150
    assert "resumed" in events(run)
    assert len(supplier.callbacks()) == 1


def _corrupt_next_message(broker: redis.Redis, queue: str) -> str:
    """Make the next message's product_ids a string: the chunk task will crash on it."""
    raw = json.loads(broker.lindex(queue, -1))
    args, kwargs, embed = json.loads(base64.b64decode(raw["body"]))
    kwargs["product_ids"] = "not a list of ids"
    raw["body"] = base64.b64encode(json.dumps([args, kwargs, embed]).encode()).decode()
    broker.lset(queue, -1, json.dumps(raw))
    return raw["headers"]["id"]


def test_a_chunk_that_crashes_is_dead_lettered_and_its_products_still_refreshed(
    app, workers, supplier
):
    """The chord error path: a header task fails, the chord still ends, the run finishes."""
    app.control.cancel_consumer(REFRESH_QUEUE, destination=workers.nodes("refresh"), reply=True)
    time.sleep(2.5)  # a BRPOP already waiting still names the queue until its 1 s timeout
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        run = start(make_products(6), chunk_size=2)
        wait_for(lambda: broker.llen(REFRESH_QUEUE) == 3, what="3 chunks on the broker")
        crashed = _corrupt_next_message(broker, REFRESH_QUEUE)
    finally:
        app.control.add_consumer(REFRESH_QUEUE, destination=workers.nodes("refresh"), reply=True)

    letter = wait_for(lambda: DeadLetter.objects.filter(task_id=crashed).first())
    assert letter.task_name == "shop.tasks.product_refresh_chunk"
    assert letter.queue == REFRESH_QUEUE and letter.run == run
    assert letter.reason == DeadLetter.Reason.FAILED and "ValueError" in letter.exception_type
    with reconciler(workers):
        run = wait_finished(run, timeout=60)
    assert run.status == RefreshRun.Status.SUCCEEDED and run.succeeded == 6
    assert "resumed" in events(run)
    assert len(supplier.callbacks()) == 1


def test_a_receiver_that_is_down_for_good_makes_wait_exit_2(workers, supplier):
    supplier.reset(StubBehaviour(callback_status=503))
    make_products(2)

    result = manage("refresh_products", "--wait", env=workers.env)

    assert result.returncode == 2, result.stdout + result.stderr
    run = RefreshRun.objects.get()
    assert run.status == RefreshRun.Status.SUCCEEDED
    assert run.callback_state == RefreshRun.Callback.FAILED
    assert "failed after 3 attempts: status receiver error (HTTP 503)" in result.stdout
    keys = {c.headers["idempotency-key"] for c in supplier.callbacks()}
    assert len(supplier.callbacks()) == 3 and keys == {f"refresh-run-{run.pk}"}


def _post_action(client, action: str, runs: list[RefreshRun]):
    return post_action(client, RUNS, action, runs)


def test_cancel_from_the_admin_stops_the_run_and_tells_the_receiver(workers, supplier):
    operator = make_staff("operator", "view_refreshrun", "control_refreshrun")
    supplier.reset(StubBehaviour(latency=1.0))
    run = start(make_products(100), chunk_size=1)
    wait_for(lambda: supplier.product_requests(), what="the run to be under way")

    page = _post_action(csrf_client(operator), "cancel_runs", [run])
    cancelled_at = time.time()

    # Products whose answer is still on its way count as unfinished: their answer is dropped.
    said = re.search(r"Cancelled by operator: ([\d,]+) unfinished products? will not be", page.text)
    assert said, page.text
    run = wait_finished(run)
    assert run.status == RefreshRun.Status.CANCELLED
    cancelled = run.items.filter(status=RefreshItem.Status.CANCELLED).count()
    assert cancelled == int(said.group(1).replace(",", "")) >= 60  # most had not even started
    assert run.done + cancelled == 100
    assert run.callback_state == "delivered", run.callback_detail
    [callback] = supplier.callbacks()
    body = callback.json()
    assert body["status"] == "cancelled" and body["cancelled"] == cancelled
    time.sleep(2)  # the queued chunks are delivered now, and skip their cancelled products
    late = [r for r in supplier.product_requests() if r.received_at > cancelled_at + 0.5]
    assert late == []
    assert "cancelled" in events(run)
    assert "Cancelled by operator" in csrf_client(operator).get(run.get_absolute_url()).text


def test_cancel_and_resume_need_the_control_permission(workers, supplier):
    viewer = make_staff("viewer", "view_refreshrun")
    run = services.refresh_run_create(product_ids=[make_products(1)[0].pk], trigger="command")
    client = csrf_client(viewer)

    assert "Cancel the selected runs" not in client.get(RUNS).text
    page = _post_action(client, "cancel_runs", [run])

    assert page.status_code == 200
    run.refresh_from_db()
    assert run.status == RefreshRun.Status.PENDING


def test_resume_from_the_admin_publishes_a_run_whose_messages_were_lost(workers, supplier):
    operator = make_staff("operator", "view_refreshrun", "control_refreshrun")
    products = make_products(3)
    # Created without publishing anything: as if its messages were lost on the way.
    run = services.refresh_run_create(product_ids=[p.pk for p in products], trigger="command")

    page = _post_action(csrf_client(operator), "resume_runs", [run])

    assert "re-published its unfinished work" in page.text
    run = wait_finished(run)
    assert run.status == RefreshRun.Status.SUCCEEDED and run.succeeded == 3
    event = RunEvent.objects.get(object_id=run.pk, kind="resumed")
    assert event.actor == operator and "asked by operator" in event.message
    assert len(supplier.callbacks()) == 1


def test_a_warm_shutdown_lets_running_chunks_finish(workers, supplier):
    supplier.reset(StubBehaviour(latency=0.6))  # under the tests' 1 s read timeout
    run = start(make_products(100), chunk_size=50)  # two chunks of ~3 s, both in flight
    wait_for(lambda: len(supplier.product_requests()) >= 10, what="both chunks under way")

    nodes = workers.processes("refresh")
    for node in nodes:  # SIGTERM: what Ctrl-C under honcho, systemd and `workers stop` send
        node.terminate()
    for node in nodes:
        node.wait(timeout=settings.CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT + 10)

    run = wait_finished(run, timeout=30)  # the callbacks node finishes it: nothing was lost
    assert run.status == RefreshRun.Status.SUCCEEDED and run.succeeded == 100
    assert [node.returncode for node in nodes] == [0] * len(nodes)
    workers.restart("refresh")
