"""The packing pool recycles its children; a recycled child loses no batch."""

from __future__ import annotations

import signal

import pytest

from core.fleet import WorkerFleet
from fulfilment.models import Fulfilment, FulfilmentBatch
from fulfilment.workflows import orders_release_request
from tests.fulfilment.conftest import make_orders, wait_batch_settled, wait_final

pytestmark = pytest.mark.timeout(120)
POOL = "fulfil_pack"


def stop_pool(fleet: WorkerFleet) -> None:
    """A warm shutdown (SIGTERM), so no prefork child outlives its parent."""
    for node in fleet.pool(POOL).nodes:
        proc = fleet.procs.pop(node)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_packing_child_over_its_memory_limit_is_replaced_and_no_batch_is_lost(
    workers, warehouse, carrier
):
    # 1 KiB: every child is over the limit after its first task, so each batch is packed
    # by a fresh child and each child is replaced while batches keep arriving. The limit
    # itself (256 MB) comes from the topology; only its size is changed here.
    stop_pool(workers)
    workers.restart(POOL, ["--max-memory-per-child", "1"])
    try:
        orders = make_orders(15)
        orders_release_request(order_ids=[o.pk for o in orders], warehouse="north")

        final = wait_final(orders, timeout=60)

        assert {f.status for f in final.values()} == {Fulfilment.Status.SHIPPED}
        batches = list(FulfilmentBatch.objects.all())
        assert len(batches) == 3
        assert all(
            wait_batch_settled(b).status == FulfilmentBatch.Status.SUCCEEDED for b in batches
        )
        packers = {b.packed_by for b in batches}
        assert len(packers) == 3, f"each batch packed by a new child: {packers}"
    finally:
        workers.wait_idle(workers.app.conf.broker_url)
        stop_pool(workers)
        workers.restart(POOL)
