"""Each task lands on the queue the topology declares: asserted on the broker itself."""

from __future__ import annotations

import json

import pytest
from kombu.exceptions import OperationalError

from proj import topology


def queued(client, queue: str) -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


@pytest.mark.parametrize("task_name,queue", sorted(topology.ROUTES.items()))
def test_each_routed_task_lands_on_its_declared_queue(app, isolated_broker, task_name, queue):
    conn, client = isolated_broker
    app.send_task(task_name, args=[], connection=conn)

    messages = queued(client, queue)
    assert [m["headers"]["task"] for m in messages] == [task_name]
    others = {q.name for q in topology.QUEUES} - {queue}
    assert all(client.llen(q) == 0 for q in others)


def test_unrouted_task_goes_to_default_queue(app, isolated_broker):
    conn, client = isolated_broker
    app.send_task("core.tasks.something_unrouted", connection=conn)
    assert [m["headers"]["task"] for m in queued(client, "default")] == [
        "core.tasks.something_unrouted"
    ]


def test_a_misspelt_queue_fails_loudly_instead_of_being_created(app, isolated_broker):
    conn, client = isolated_broker
    with pytest.raises((KeyError, OperationalError), match=r"shop\.refresh_typo"):
        app.send_task("core.tasks.ping", queue="shop.refresh_typo", connection=conn)
    assert client.keys("shop.refresh_typo*") == []
