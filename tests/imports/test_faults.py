"""An import runs to the end through a broker lost mid-run and back empty, and through
PostgreSQL dropping every connection.

For the broker, the imports and callbacks nodes run on a Redis of their own. Everything a
user queue held, the chunks delivered but not acknowledged, and the queue itself, are gone
when it comes back: the nodes consume the user queue again, and the reconciler publishes
the chunks still pending.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import connection

from core.fleet import WorkerFleet
from core.waiting import wait_for
from imports import services, workflows
from imports.models import ImportRun
from shop.models import Product
from tests.imports.conftest import catalogue, wait_run
from tests.support.factories import make_staff
from tests.support.faults import PrivateRedis, Reconciler, nodes_on_private_broker, publishing_to

pytestmark = [pytest.mark.workers, pytest.mark.timeout(180)]
ROWS = 400


def start_import() -> ImportRun:
    user = make_staff("carol", "add_importrun")
    validation = services.catalogue_validate(catalogue(ROWS, price="4.50"), user=user)
    run, _ = workflows.import_run_request(
        validation=validation, file_name="big.csv", trigger="command", requested_by=user,
        chunk_size=1,
    )  # fmt: skip
    return run


def wait_under_way(run: ImportRun) -> None:
    def under_way() -> bool:
        run.refresh_from_db()
        return run.succeeded >= 50

    wait_for(under_way, timeout=60, interval=0.05, what="the import under way")


def assert_imported(run: ImportRun) -> None:
    """Every row created once, at its price; the run says so."""
    assert run.status == ImportRun.Status.SUCCEEDED
    assert (run.rows_created, run.rows_updated, run.rows_failed) == (ROWS, 0, 0)
    prices = set(Product.objects.filter(sku__startswith="NEW-").values_list("price", flat=True))
    assert Product.objects.filter(sku__startswith="NEW-").count() == ROWS
    assert {str(p) for p in prices} == {"4.50"}


@pytest.fixture
def imports_on_private_broker(
    workers: WorkerFleet, fair_queues, tmp_path_factory
) -> Iterator[PrivateRedis]:
    with nodes_on_private_broker(
        workers, tmp_path_factory.mktemp("redis"), ("imports", "callbacks"), "imports-outage"
    ) as server:
        yield server


def test_the_broker_lost_mid_import_and_back_empty_the_import_finishes(
    app, imports_on_private_broker
):
    broker = imports_on_private_broker
    fleet: WorkerFleet = broker.fleet  # type: ignore[attr-defined]
    with publishing_to(app, broker.url):
        run = start_import()
    wait_under_way(run)
    broker.stop()
    run.refresh_from_db()
    assert not run.is_finished, "the import finished before the broker went: nothing tested"
    time.sleep(3)
    broker.start()  # back, and empty

    with Reconciler(fleet.env, fleet.log_dir / "reconciler.log"):
        run = wait_run(run, timeout=120)
    assert_imported(run)
    dead = {node: proc.returncode for node, proc in fleet.procs.items() if proc.poll() is not None}
    assert not dead, f"nodes died: {dead}"


def test_postgresql_dropping_connections_mid_import_the_import_finishes(workers, fair_queues):
    if connection.vendor != "postgresql":
        pytest.skip("terminating server connections is a PostgreSQL fault")
    run = start_import()
    wait_under_way(run)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] > 0
    run.refresh_from_db()
    assert not run.is_finished, "the import finished before the failover: nothing tested"

    with Reconciler(workers.env, workers.log_dir / "reconciler-imports.log"):
        run = wait_run(run, timeout=120)
    assert_imported(run)
