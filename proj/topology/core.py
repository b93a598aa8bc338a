"""Infrastructure: the default queue, and the node that serves it with the callbacks."""

from __future__ import annotations

from proj.topology.base import Pool, Queue
from proj.topology.shop import CALLBACKS_QUEUE

DEFAULT_QUEUE = "default"

QUEUES = (Queue(DEFAULT_QUEUE, "anything without a route: health pings, small chores"),)

ROUTES = {"core.tasks.ping": DEFAULT_QUEUE}

POOLS = (
    Pool(
        "callbacks",
        (CALLBACKS_QUEUE, DEFAULT_QUEUE),
        concurrency=20,
        # Short tasks, mostly waiting on the database or one HTTP call: one process is plenty.
        processes=1,
        purpose="its own node, so callbacks never queue behind refresh chunks",
    ),
)
