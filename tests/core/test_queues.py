"""The operators' queue page: what the broker, the workers and the topology say."""

from __future__ import annotations

import io
import logging
import os
import time

import pytest
from celery import Celery
from django.core.cache import cache
from django.urls import reverse

from core.queues import queue_overview
from proj import topology
from tests.core.test_rabbitmq import AMQP_URL, rabbitmq_answers
from tests.shop.conftest import csrf_client
from tests.support.factories import make_staff
from tests.support.faults import publishing_to

pytestmark = pytest.mark.workers
PREFORK = next(p for p in topology.POOLS if p.pool == "prefork")


@pytest.fixture
def operator(db):
    return make_staff("ops", "view_queues", "view_deadletter")


def test_the_json_lists_every_queue_with_its_consumers_and_warns_about_a_stranded_one(
    app, workers, operator
):
    queue = PREFORK.queues[0]
    node = workers.node(PREFORK)
    app.control.cancel_consumer(queue, destination=[node], reply=True)
    try:
        time.sleep(1.5)  # the node's pending BRPOP ends with its 1 s timeout
        for _ in range(2):
            app.send_task("core.tasks.ping", queue=queue)
        cache.clear()  # the consumers are cached for a few seconds: ask again
        body = csrf_client(operator).get(reverse("queues-json")).json()
    finally:
        app.control.add_consumer(queue, destination=[node], reply=True)
    rows = {row["name"]: row for row in body["queues"]}
    assert {q.name for q in topology.QUEUES} <= set(rows)
    stranded = rows[queue]
    assert stranded["depth"] == 2 and stranded["consumers"] == []
    assert stranded["warning"] == "2 messages and no consumer: nothing will run them"
    assert stranded["oldest_seconds"] is not None and stranded["oldest_seconds"] < 60
    assert stranded["pools"] == [PREFORK.name]
    refresh = rows[topology.REFRESH_QUEUE]
    assert refresh["consumers"] == sorted(workers.nodes("refresh")) and not refresh["warning"]


def test_the_queue_page_needs_its_permission(client, workers, db):
    client.force_login(make_staff("viewer", "view_product"))
    page = client.get(reverse("queues"))
    assert page.status_code == 403 and "You do not have permission to do this" in page.text


def test_the_overview_works_on_rabbitmq(worker_fleet, transactional_db, monkeypatch):
    if not rabbitmq_answers():
        if os.environ.get("CI") == "true":
            pytest.fail(f"RabbitMQ does not answer at {AMQP_URL}")
        pytest.skip(f"RabbitMQ does not answer at {AMQP_URL}")
    monkeypatch.setenv("CELERY_BROKER_URL", AMQP_URL)
    sender = Celery("sender", broker=AMQP_URL, set_as_current=False)
    queue = PREFORK.queues[0]
    with sender.connection_for_write() as conn:
        channel = conn.default_channel
        channel.queue_declare(queue=queue, durable=True, auto_delete=False)
        channel.queue_purge(queue)
        sender.send_task("core.tasks.ping", queue=queue, connection=conn)
    from proj.celery import app

    with publishing_to(app, AMQP_URL):
        cache.clear()
        rows = {row.name: row for row in queue_overview(refresh=True)}
    assert rows[queue].depth == 1 and rows[queue].consumers == []
    assert rows[queue].oldest_seconds is None  # RabbitMQ cannot show a message untaken
    assert "no consumer" in rows[queue].warning
    with sender.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def test_a_refusal_is_logged_once_without_a_traceback(client, db):
    """Through the console handler the settings configure, as a server's log shows it."""
    [console] = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    buffer = io.StringIO()
    previous = console.setStream(buffer)
    try:
        client.force_login(make_staff("viewer", "view_product"))
        client.get("/admin/reports/reportrun/add/")
    finally:
        console.setStream(previous)
    lines = [line for line in buffer.getvalue().splitlines() if "Forbidden" in line]
    assert len(lines) == 1 and "/admin/reports/reportrun/add/" in lines[0]
    assert "Traceback" not in buffer.getvalue()


def test_workers_log_that_a_task_succeeded_not_what_it_returned(app, workers):
    result = app.send_task("core.tasks.ping")
    assert result.get(timeout=30) == "pong"
    log = workers.log_text("callbacks")
    [line] = [line for line in log.splitlines() if f"[{result.id}] succeeded" in line]
    assert line.rstrip().endswith("s") and "pong" not in line
