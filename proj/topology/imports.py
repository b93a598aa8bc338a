"""Catalogue imports: one queue per staff user with work in flight (a queue family).

A user's import chunks go to `imports.user.<id>`, made when their first import starts and
removed once drained and idle (imports/fair.py); every node of the `imports` pool consumes
every active one, so the broker hands chunks out round-robin across users. Finish steps
and the queue lifecycle's own tasks use the fixed `imports.runs` queue, so they never wait
behind anybody's chunks.
"""

from __future__ import annotations

from proj.topology.base import Pool, Queue, QueueFamily

RUNS_QUEUE = "imports.runs"

USER_QUEUES = QueueFamily(
    prefix="imports.user.",
    pool="imports",
    purpose="one staff user's import chunks, while they have imports in flight",
    overflow_prefix="imports.overflow.",
)

QUEUES = (Queue(RUNS_QUEUE, "import finish steps and user-queue upkeep: short"),)

ROUTES = {
    "imports.tasks.import_run_finish": RUNS_QUEUE,
    "imports.tasks.fair_queues_sync": RUNS_QUEUE,
}

FAMILIES = (USER_QUEUES,)

POOLS = (
    Pool(
        "imports",
        (RUNS_QUEUE,),
        # A chunk is bulk database work; few slots per node keep a user's wait behind
        # others short (a new queue's first chunk waits for at most one chunk per slot).
        concurrency=8,
        purpose="catalogue import chunks from every active user queue, round-robin",
    ),
)
