"""An import runs to the end through a broker lost mid-run and back empty.

The imports and callbacks nodes here run on a Redis of their own. Everything a user queue
held, the chunks delivered but not acknowledged, and the queue itself, are gone when it
comes back: the nodes consume the user queue again, and the reconciler publishes the chunks
still pending.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from core.fleet import WorkerFleet
from core.waiting import wait_for
from imports import services, workflows
from imports.models import ImportRun
from shop.models import Product
from tests.imports.conftest import catalogue, wait_run
from tests.support.factories import make_staff
from tests.support.faults import PrivateRedis, Reconciler, nodes_on_private_broker, publishing_to

pytestmark = [pytest.mark.workers, pytest.mark.timeout(180)]
ROWS = 1500


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
    user = make_staff("carol", "add_importrun")
    validation = services.catalogue_validate(catalogue(ROWS, price="4.50"), user=user)
    with publishing_to(app, broker.url):
        run, _ = workflows.import_run_request(
            validation=validation, file_name="big.csv", trigger="command", requested_by=user,
            chunk_size=1,
        )  # fmt: skip

    def under_way() -> bool:
        run.refresh_from_db()
        return run.succeeded >= 50

    wait_for(under_way, timeout=60, interval=0.05, what="the import under way")
    broker.stop()
    run.refresh_from_db()
    assert not run.is_finished, "the import finished before the broker went: nothing tested"
    time.sleep(3)
    broker.start()  # back, and empty

    with Reconciler(fleet.env, fleet.log_dir / "reconciler.log"):
        run = wait_run(run, timeout=120)
    assert run.status == ImportRun.Status.SUCCEEDED
    assert (run.rows_created, run.rows_failed) == (ROWS, 0)
    prices = set(Product.objects.filter(sku__startswith="NEW-").values_list("price", flat=True))
    assert Product.objects.filter(sku__startswith="NEW-").count() == ROWS
    assert {str(p) for p in prices} == {"4.50"}
    dead = {node: proc.returncode for node, proc in fleet.procs.items() if proc.poll() is not None}
    assert not dead, f"nodes died: {dead}"
