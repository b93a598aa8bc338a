"""Catalogue imports: one queue per staff user with work in flight (a queue family).

A user's import chunks go to `imports.user.<id>`, made when their first import starts and
removed once drained and idle (imports/fair.py); every node of the `imports` pool consumes
every active one, so the broker hands chunks out round-robin across users. Finish steps
and the queue lifecycle's own tasks go to the callbacks node: in the imports nodes' round
robin they would wait a turn among 100 users' queues (measured: a finish step waited 50 s
behind 100 syncs). The pool's own queue `imports.nodes` carries no task: consuming it is
what makes a node an imports node, the one that gets the user queues (celery#3399).
"""

from __future__ import annotations

from proj.topology.base import Pool, Queue, QueueFamily
from proj.topology.shop import CALLBACKS_QUEUE

NODES_QUEUE = "imports.nodes"

USER_QUEUES = QueueFamily(
    prefix="imports.user.",
    pool="imports",
    purpose="one staff user's import chunks, while they have imports in flight",
    overflow_prefix="imports.overflow.",
)

QUEUES = (
    Queue(NODES_QUEUE, "marks the imports nodes, which get the user queues; no task goes here"),
)

ROUTES = {
    "imports.tasks.import_run_finish": CALLBACKS_QUEUE,
    "imports.tasks.fair_queues_sync": CALLBACKS_QUEUE,
}

FAMILIES = (USER_QUEUES,)

POOLS = (
    Pool(
        "imports",
        (NODES_QUEUE,),
        # A chunk is bulk database work; few slots per node keep a user's wait behind
        # others short (a new queue's first chunk waits for at most one chunk per slot).
        concurrency=8,
        purpose="catalogue import chunks from every active user queue, round-robin",
    ),
)
