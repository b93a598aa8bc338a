"""Every task of a report run lands on its own type's queue: asserted on the broker."""

from __future__ import annotations

import json

import pytest

from core.models import OutboxMessage
from proj import topology
from reports import registry, services, workflows


@pytest.mark.django_db
@pytest.mark.parametrize("identifier", topology.report_identifiers())
def test_gather_and_render_land_on_the_types_queue(app, isolated_broker, identifier, shop):
    """The canvas as the outbox stores it (JSON) still routes every task to its queue."""
    conn, client = isolated_broker
    kind = registry.get(identifier)
    run = services.report_run_create(report_type=identifier, params=kind.clean_params({}))
    stored = OutboxMessage(signature=json.loads(json.dumps(workflows.report_remaining_work(run))))
    canvas = app.signature(stored.signature)
    # What the worker publishes (the chord's header, then its body), published here.
    for sig in canvas.tasks:
        sig.apply_async(connection=conn)
    canvas.body.apply_async(connection=conn)

    queue = kind.queue
    assert queue == topology.report_queue(identifier) == f"reports.{identifier}"
    # Kombu pushes on the left and workers pop on the right: oldest message last.
    names = [json.loads(m)["headers"]["task"] for m in reversed(client.lrange(queue, 0, -1))]
    assert names == [
        *["reports.tasks.report_run_gather_part"] * run.total,
        "reports.tasks.report_run_render",
    ]
    assert all(client.llen(q.name) == 0 for q in topology.QUEUES if q.name != queue)
