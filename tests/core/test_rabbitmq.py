"""`CELERY_BROKER_URL=amqp://...` works: a real worker on the local RabbitMQ runs a task."""

from __future__ import annotations

import contextlib
import os

import pytest
from celery import Celery
from kombu import Connection

from core.fleet import WorkerFleet
from core.models import DeadLetter
from core.waiting import wait_for
from proj import topology

pytestmark = pytest.mark.database_agnostic

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def rabbitmq_answers() -> bool:
    try:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


@pytest.fixture
def amqp_app(monkeypatch):
    """The project's configuration with CELERY_BROKER_URL on the local RabbitMQ."""
    if not rabbitmq_answers():
        if os.environ.get("CI") == "true":
            pytest.fail(f"RabbitMQ does not answer at {AMQP_URL}")
        pytest.skip(f"RabbitMQ does not answer at {AMQP_URL}")
    # Celery reads CELERY_BROKER_URL from the environment before any setting, as in
    # production; a second app in this process then talks to RabbitMQ.
    monkeypatch.setenv("CELERY_BROKER_URL", AMQP_URL)
    app = Celery("proj", set_as_current=False)  # never replace the project app
    app.config_from_object("django.conf:settings", namespace="CELERY")
    with app.connection_for_write() as conn:  # nothing left over from an earlier run
        for queue in topology.QUEUES:
            with contextlib.suppress(Exception):
                conn.default_channel.queue_purge(queue.name)
    return app


@pytest.mark.workers
def test_a_worker_on_rabbitmq_runs_tasks(worker_fleet, transactional_db, tmp_path, amqp_app):
    app = amqp_app
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
    log = fleet.log_text(callbacks.name)
    vhost = AMQP_URL.rsplit("/", 1)[1] or "/"
    assert f"Connected to amqp://guest:**@127.0.0.1:5672/{vhost}" in log


@pytest.mark.workers
def test_a_task_that_kills_its_gevent_node_is_dead_lettered_on_rabbitmq(
    worker_fleet, transactional_db, tmp_path, amqp_app
):
    """The whole node dies each time; RabbitMQ redelivers at once; the limit stops it."""
    app = amqp_app
    env = {**worker_fleet.env, "CELERY_BROKER_URL": AMQP_URL}
    fleet = WorkerFleet(app, env, tmp_path, hostname="pytest-amqp-crash")
    callbacks = fleet.pool("callbacks")
    fleet.start((callbacks,))
    crash = app.send_task("devtools.tasks.crash_process")
    limited = DeadLetter.objects.filter(task_id=crash.id).exists
    restarts = 0
    try:
        while True:
            node = fleet.procs.pop(callbacks.name)
            wait_for(lambda n=node: n.poll() is not None or limited(), timeout=60)
            if node.poll() is None:
                fleet.procs[callbacks.name] = node
                break
            restarts += 1  # and start it again, as systemd or a process manager would
            fleet.start((callbacks,), wait=False)
        assert app.send_task("core.tasks.ping").get(timeout=30) == "pong"  # it serves on
    finally:
        fleet.stop()
    letter = DeadLetter.objects.get(task_id=crash.id)
    assert letter.reason == DeadLetter.Reason.DELIVERY_LIMIT and letter.attempts == 4
    assert restarts == 3 and letter.queue == "default"


@pytest.mark.workers
def test_a_gevent_node_on_rabbitmq_takes_messages_without_pausing(
    worker_fleet, transactional_db, tmp_path, amqp_app
):
    """Celery 5.7's synloop waited 0.1 s on the event connection after every message
    (core.greenpoll): any gevent node ran 10 tasks a second, so 300 short tasks took 30 s.
    The deadline is a liveness bound, a third of that; bench/fairness.py measures speed."""
    app = amqp_app
    env = {**worker_fleet.env, "CELERY_BROKER_URL": AMQP_URL}
    fleet = WorkerFleet(app, env, tmp_path / "log", hostname="pytest-amqp-pace")
    callbacks = next(p for p in topology.POOLS if topology.DEFAULT_QUEUE in p.queues)
    fleet.start((callbacks,))
    try:
        warm = tmp_path / "warm"  # the first task imports modules and opens connections
        app.send_task("devtools.tasks.touch", args=[str(warm)], queue=topology.DEFAULT_QUEUE)
        wait_for(warm.exists, timeout=30, what="the first task")
        done = [tmp_path / f"done-{i}" for i in range(300)]
        for path in done:
            app.send_task("devtools.tasks.touch", args=[str(path)], queue=topology.DEFAULT_QUEUE)
        wait_for(lambda: all(p.exists() for p in done), timeout=10, what="300 short tasks")
    finally:
        fleet.stop()
