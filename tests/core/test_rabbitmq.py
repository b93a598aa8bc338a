"""`CELERY_BROKER_URL=amqp://...` works: a real worker on the local RabbitMQ runs a task."""

from __future__ import annotations

import os

import pytest
from celery import Celery
from kombu import Connection

from proj import topology
from tests.support.workers import WorkerFleet

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def rabbitmq_answers() -> bool:
    try:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


@pytest.mark.workers
def test_a_worker_on_rabbitmq_runs_tasks(worker_fleet, transactional_db, tmp_path, monkeypatch):
    if not rabbitmq_answers():
        if os.environ.get("CI") == "true":
            pytest.fail(f"RabbitMQ does not answer at {AMQP_URL}")
        pytest.skip(f"RabbitMQ does not answer at {AMQP_URL}")
    # Celery reads CELERY_BROKER_URL from the environment before any setting, as in
    # production; a second app in this process then talks to RabbitMQ.
    monkeypatch.setenv("CELERY_BROKER_URL", AMQP_URL)
    app = Celery("proj", set_as_current=False)  # never replace the project app
    app.config_from_object("django.conf:settings", namespace="CELERY")
    env = {**worker_fleet.env, "CELERY_BROKER_URL": AMQP_URL}
    fleet = WorkerFleet(app, env, tmp_path, hostname="pytest-amqp")
    callbacks = next(p for p in topology.POOLS if topology.DEFAULT_QUEUE in p.queues)
    fleet.start((callbacks,))
    try:
        assert app.send_task("core.tasks.ping").get(timeout=30) == "pong"
        queues = app.control.inspect(destination=[fleet.node(callbacks)]).active_queues()
        assert {q["name"] for q in queues[fleet.node(callbacks)]} == set(callbacks.queues)
    finally:
        fleet.stop()
    log = fleet.log_path(callbacks.name).read_text()
    assert "Connected to amqp://guest:**@127.0.0.1:5672//" in log
