"""The shop's queues: supplier refresh chunks, and the callbacks that finish runs."""

from __future__ import annotations

from proj.topology.base import Pool, Queue

REFRESH_QUEUE = "shop.refresh"
CALLBACKS_QUEUE = "shop.callbacks"

QUEUES = (
    Queue(REFRESH_QUEUE, "supplier refresh chunks: many slow HTTP calls"),
    Queue(CALLBACKS_QUEUE, "workflow callbacks: short, must never wait behind refresh work"),
)

ROUTES = {
    "shop.tasks.product_refresh_chunk": REFRESH_QUEUE,
    "shop.tasks.refresh_run_finish": CALLBACKS_QUEUE,
    "shop.tasks.refresh_run_notify": CALLBACKS_QUEUE,
}

POOLS = (
    # CPU, not the network, bounds a refresh (parsing, bulk writes): one process per core.
    Pool(
        "refresh",
        (REFRESH_QUEUE,),
        concurrency=40,
        purpose="I/O-bound supplier calls; each task also fans out HTTP requests",
    ),
)
