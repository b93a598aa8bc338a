"""Outages of the services themselves: the broker down (a private Redis we stop and restart
empty) and PostgreSQL dropping every worker connection mid-run.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connection

from core.fleet import WorkerFleet
from core.models import OutboxMessage, RunEvent
from core.waiting import wait_for
from devtools.supplier_stub import StubBehaviour
from shop.models import RefreshRun
from shop.workflows import refresh_run_request
from tests.shop.conftest import csrf_client, make_products, run_action, wait_finished
from tests.support.faults import PrivateRedis, Reconciler, nodes_on_private_broker, publishing_to
from tests.support.settings_env import manage

pytestmark = pytest.mark.workers


@pytest.fixture(scope="module")
def private_broker(worker_fleet: WorkerFleet, tmp_path_factory) -> Iterator[PrivateRedis]:
    """A Redis of our own, with the refresh and callback nodes on it, to stop at will."""
    with nodes_on_private_broker(
        worker_fleet, tmp_path_factory.mktemp("redis"), ("refresh", "callbacks"), "outage"
    ) as server:
        yield server


def test_the_broker_down_saves_the_run_and_it_starts_when_the_broker_is_back(
    app, workers, supplier, refresher, private_broker
):
    products = make_products(3)
    env = private_broker.fleet.env  # type: ignore[attr-defined]
    private_broker.stop()

    with publishing_to(app, private_broker.url):
        page = run_action(csrf_client(refresher), products[:2])
    command = manage("refresh_products", "--sku", products[2].sku, "--wait", env=env)

    assert page.status_code == 200
    admin_run, command_run = RefreshRun.objects.order_by("pk")
    assert (
        f"refresh run #{admin_run.pk}</a> is saved and will start when the task broker is "
        "reachable again" in page.text
    )
    assert command.returncode == 4, command.stdout + command.stderr
    assert f"run #{command_run.pk} is saved and will start when it is" in command.stderr
    assert "Traceback" not in command.stderr
    waiting = OutboxMessage.objects.filter(published_at__isnull=True)
    assert waiting.count() == 2 and all(m.last_error for m in waiting)
    assert {r.status for r in RefreshRun.objects.all()} == {"pending"}
    assert (
        "waiting for the task broker since"
        in csrf_client(refresher).get(admin_run.get_absolute_url()).text
    )

    private_broker.start()  # back, and empty
    with Reconciler(env, private_broker.fleet.log_dir / "reconciler.log"):  # type: ignore[attr-defined]
        for run in (admin_run, command_run):
            run = wait_finished(run, timeout=60)
            assert run.status == RefreshRun.Status.SUCCEEDED
            kinds = set(RunEvent.objects.filter(object_id=run.pk).values_list("kind", flat=True))
            assert {"publish_failed", "published_late"} <= kinds
    assert len(supplier.callbacks()) == 2
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


def test_the_broker_lost_mid_run_and_back_empty_the_run_finishes_and_no_node_dies(
    app, workers, supplier, private_broker
):
    """Redis dies while every chunk is in flight (delivered, unacknowledged) and comes back
    empty. Each node's consumer closes its broken connection, whose channel tries to put
    the unacknowledged messages back; kombu raised AttributeError there (the transport
    already closed), which Celery calls unrecoverable: the node shut down for good. A race:
    without core.redis_restore this failed in about half the runs ("nodes died").
    """
    supplier.reset(StubBehaviour(latency=0.5))
    products = make_products(200)
    fleet = private_broker.fleet  # type: ignore[attr-defined]
    with publishing_to(app, private_broker.url):
        run, _ = refresh_run_request(
            product_ids=[p.pk for p in products], trigger=RefreshRun.Trigger.COMMAND,
            chunk_size=10,
        )  # fmt: skip
    wait_for(lambda: len(supplier.product_requests()) >= 100, what="the chunks to be in flight")

    private_broker.stop()
    time.sleep(3)
    private_broker.start()  # back, and empty

    with Reconciler(fleet.env, fleet.log_dir / "reconciler-mid-run.log"):
        run = wait_finished(run, timeout=90)
    assert run.status == RefreshRun.Status.SUCCEEDED
    assert (run.succeeded, run.failed) == (200, 0)
    assert len(supplier.callbacks()) == 1
    dead = {node: proc.returncode for node, proc in fleet.procs.items() if proc.poll() is not None}
    assert not dead, f"nodes died: {dead}"
    with publishing_to(app, private_broker.url), app.connection_for_write() as conn:
        replies = app.control.ping(timeout=2, connection=conn)  # not a pooled, dead one
    assert {name.split("@")[0] for reply in replies for name in reply} >= set(fleet.procs)


def _drop_worker_connections() -> int:
    """pg_terminate_backend every other session on the test database: a failover."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_postgresql_dropping_connections_mid_run_still_finishes_the_run(workers, supplier):
    if connection.vendor != "postgresql":
        pytest.skip("terminating server connections is a PostgreSQL fault")
    products = make_products(2000)
    supplier.reset(StubBehaviour(latency=0.05))
    run, _ = refresh_run_request(product_ids=[p.pk for p in products], trigger="command")
    wait_for(lambda: RefreshRun.objects.get(pk=run.pk).succeeded > 100, what="progress")

    dropped = 0
    for _ in range(5):  # keep dropping them while chunks write
        dropped += _drop_worker_connections()
        run.refresh_from_db()
        if run.is_finished:
            break
        time.sleep(0.3)
    assert dropped > 0

    with Reconciler(workers.env, workers.log_dir / "reconciler.log", stall=5):
        run = wait_finished(run, timeout=180)
    assert run.status == RefreshRun.Status.SUCCEEDED, run.error
    assert run.succeeded == 2000
    assert len(supplier.callbacks()) == 1


def test_refresh_command_waiting_through_a_database_failover_reports_the_outcome(workers, supplier):
    """cron's `refresh_products --wait` loses its own connection too: it says so in one
    line, keeps waiting, and ends with the run's outcome and exit code, no traceback."""
    if connection.vendor != "postgresql":
        pytest.skip("terminating server connections is a PostgreSQL fault")
    make_products(2000)
    supplier.reset(StubBehaviour(latency=0.05))
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    command = threading.Thread(
        target=lambda: result.update(
            done=manage("refresh_products", "--wait", env=workers.env, timeout=240)
        )
    )
    command.start()
    wait_for(
        lambda: RefreshRun.objects.filter(succeeded__gt=100).exists(), what="the run's progress"
    )

    assert _drop_worker_connections() > 0  # the command's, and the workers'

    with Reconciler(workers.env, workers.log_dir / "reconciler-command.log", stall=5):
        command.join(timeout=240)
    done = result["done"]
    run = RefreshRun.objects.get()
    assert done.returncode == 0, done.stderr
    assert "Lost the database connection (" in done.stdout
    assert "still waiting." in done.stdout
    assert f"Run {run.pk} succeeded: 2,000 refreshed, 0 failed" in done.stdout
    assert "Traceback" not in done.stderr
    assert len(supplier.callbacks()) == 1
