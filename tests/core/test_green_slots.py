"""A gevent node on Redis uses a freed slot at once (core.greenpoll).

Without the fix kombu's poller, once every slot is busy, looks again only after a sleep of
up to 1 s or a 2 s poll: with one slot held by a long task, 20 short tasks through the
other slot took 20-40 s. The deadline below is a liveness bound (what a stuck slot would
miss by an order of magnitude), not a measure of speed: bench/fairness.py measures that.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.fleet import WorkerFleet
from core.waiting import wait_for
from proj import topology
from tests.support.faults import PrivateRedis, publishing_to

pytestmark = [pytest.mark.workers, pytest.mark.database_agnostic]


@pytest.fixture
def two_slot_node(worker_fleet: WorkerFleet, tmp_path) -> Iterator[WorkerFleet]:
    """The callbacks pool's node with 2 slots, on a Redis of its own."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    env = {**worker_fleet.env, "CELERY_BROKER_URL": server.url}
    fleet = WorkerFleet(worker_fleet.app, env, worker_fleet.log_dir / "slots", "pytest-slots")
    with publishing_to(worker_fleet.app, server.url):
        fleet.start((fleet.pool("callbacks"),), ["--concurrency", "2"])
        yield fleet
        fleet.stop()
    server.stop()


def test_a_long_task_in_one_slot_does_not_stop_the_other_from_serving(app, two_slot_node, tmp_path):
    queue = topology.CALLBACKS_QUEUE
    node = two_slot_node.node("callbacks")
    stats = app.control.inspect(destination=[node], timeout=2).stats()
    assert stats[node]["pool"]["max-concurrency"] == 2
    marker, started = tmp_path / "hold", tmp_path / "started"
    marker.write_text("hold")
    try:
        app.send_task("devtools.tasks.hold", args=[str(marker), str(started)], queue=queue)
        wait_for(started.exists, timeout=30, what="the long task to take a slot")
        served = [tmp_path / f"served-{i}" for i in range(20)]
        for path in served:
            app.send_task("devtools.tasks.touch", args=[str(path)], queue=queue)

        wait_for(
            lambda: all(p.exists() for p in served),
            timeout=8,
            what="20 short tasks through the free slot while the long one holds the other",
        )
        active = app.control.inspect(destination=[node], timeout=2).active()
        # The long task still holds its slot: the short ones all went through the other.
        assert [t["name"] for t in active[node]] == ["devtools.tasks.hold"]
    finally:
        marker.unlink()  # let the long task end, so the node stops at once


@pytest.fixture
def idle_node(worker_fleet: WorkerFleet, tmp_path) -> Iterator[WorkerFleet]:
    """The callbacks node on a Redis of its own, its idle BRPOP waiting 60 s, not 1 s."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    env = {**worker_fleet.env, "CELERY_BROKER_URL": server.url, "WORKER_BRPOP_TIMEOUT": "60"}
    fleet = WorkerFleet(worker_fleet.app, env, worker_fleet.log_dir / "idle", "pytest-idle")
    with publishing_to(worker_fleet.app, server.url):
        fleet.start((fleet.pool("callbacks"),))
        yield fleet
        fleet.stop()
    server.stop()


def test_an_idle_node_consumes_a_queue_added_at_run_time_at_once(app, idle_node, tmp_path):
    """Before the fix the new queue was read only when the BRPOP already sent came back
    (here after 60 s); a user's first import on idle nodes waited for it."""
    node = idle_node.node("callbacks")
    queue = "imports.user.991"  # a queue no node consumes until it is told to
    done = tmp_path / "done"
    app.send_task("devtools.tasks.touch", args=[str(done)], queue=queue)
    assert not done.exists()

    replies = app.control.add_consumer(queue, destination=[node], reply=True, timeout=5)
    assert replies == [{node: {"ok": f"add consumer {queue}"}}]

    wait_for(done.exists, timeout=15, what="the task on the queue just added")
    active = app.control.inspect(destination=[node], timeout=2).active_queues()
    assert queue in [q["name"] for q in active[node]]
