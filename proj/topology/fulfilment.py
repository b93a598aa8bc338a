"""Order fulfilment: an aggregation queue, then one queue per stage and warehouse.

Warehouses come from FULFILMENT_WAREHOUSES (comma-separated, default "north,south"), read
here from the environment because the topology loads without Django; settings expose the
same tuple. Each stage of each warehouse has its own queue (`fulfilment.pick.north`...), so
an operator can see, drain or scale one warehouse's stage without touching the other.

Pools are per stage, not per stage and warehouse: one pool consumes every warehouse's
queue of its stage. Separate queues keep the warehouses' backlogs apart and measurable;
sharing the process keeps the fleet small (three processes for any number of warehouses),
which matters on a small host where the test suite starts every pool. A warehouse that
needs its own capacity gets a pool of its own by adding one here.
"""

from __future__ import annotations

import os

from proj.topology.base import Pool, Queue

DEFAULT_WAREHOUSES = ("north", "south")
STAGES = ("pick", "pack", "ship")
AGGREGATE_QUEUE = "fulfilment.aggregate"


def warehouses() -> tuple[str, ...]:
    """The configured warehouse codes: lower-case identifiers, in declaration order."""
    raw = os.environ.get("FULFILMENT_WAREHOUSES", "")
    names = tuple(dict.fromkeys(n.strip().lower() for n in raw.split(",") if n.strip()))
    for name in names:
        if not (name.isascii() and name.replace("_", "").isalnum()):
            raise ValueError(
                f"FULFILMENT_WAREHOUSES: {name!r} is not a valid warehouse code "
                "(letters, digits and _ only; it becomes part of queue names)"
            )
    return names or DEFAULT_WAREHOUSES


WAREHOUSES = warehouses()


def stage_queue(stage: str, warehouse: str) -> str:
    """`fulfilment.<stage>.<warehouse>`: where a batch's stage task is published."""
    return f"fulfilment.{stage}.{warehouse}"


def _stage_queues(stage: str) -> tuple[str, ...]:
    return tuple(stage_queue(stage, w) for w in WAREHOUSES)


QUEUES = (
    Queue(AGGREGATE_QUEUE, "released orders waiting to be batched per warehouse: short"),
    *(
        Queue(stage_queue(stage, w), f"{stage} stage of the {w} warehouse's batches")
        for stage in STAGES
        for w in WAREHOUSES
    ),
)

# Stage tasks get their warehouse's queue on the signature (fulfilment/workflows.py).
ROUTES = {
    "fulfilment.tasks.orders_aggregate": AGGREGATE_QUEUE,
}

POOLS = (
    # Picking is one HTTP call per batch to the warehouse API; the aggregator is a few
    # queries. Both wait, neither computes: gevent, one process.
    Pool(
        "fulfil_pick",
        (AGGREGATE_QUEUE, *_stage_queues("pick")),
        concurrency=10,
        processes=1,
        purpose="aggregation and picking (warehouse API): I/O-bound",
    ),
    # Packing renders a PDF label per order: CPU-bound, so prefork. reportlab keeps caches
    # (fonts, images) that grow with what it drew; children are recycled after a number of
    # tasks or above a resident size, so a slow leak can never take the node down.
    Pool(
        "fulfil_pack",
        _stage_queues("pack"),
        concurrency=2,
        pool="prefork",
        processes=1,
        max_tasks_per_child=200,
        max_memory_per_child=256_000,  # KiB
        purpose="shipping-label PDFs: CPU-bound, children recycled",
    ),
    # Shipping is one HTTP call per batch to the carrier API, then notifications.
    Pool(
        "fulfil_ship",
        _stage_queues("ship"),
        concurrency=10,
        processes=1,
        purpose="carrier API calls and customer notifications: I/O-bound",
    ),
)
