"""Every task of a report run lands on its own type's queue: asserted on the broker."""

from __future__ import annotations

import json

import pytest

from proj import topology
from reports import registry, services, workflows
from tests.reports.conftest import RANGE

PARAMS = {"sales_summary": RANGE, "price_changes": RANGE, "inventory": {}}


def test_every_registered_type_has_params_here():
    assert sorted(PARAMS) == [t.identifier for t in registry.all_types()]
    assert list(topology.report_identifiers()) == sorted(PARAMS)


@pytest.mark.django_db
@pytest.mark.parametrize("identifier", topology.report_identifiers())
def test_start_gather_and_render_land_on_the_types_queue(app, isolated_broker, identifier, shop):
    conn, client = isolated_broker
    kind = registry.get(identifier)
    run = services.report_run_create(
        report_type=identifier, params=kind.clean_params(PARAMS[identifier])
    )
    canvas = workflows.report_run_canvas(run)
    start, fan_out = canvas.tasks
    # What the worker publishes later (the chord's header, then its body), published now.
    for sig in [start, *fan_out.tasks]:
        sig.apply_async(connection=conn)
    fan_out.body.apply_async(([],), connection=conn)  # as the backend does, with the partials

    queue = kind.queue
    assert queue == topology.report_queue(identifier) == f"reports.{identifier}"
    # Kombu pushes on the left and workers pop on the right: oldest message last.
    names = [json.loads(m)["headers"]["task"] for m in reversed(client.lrange(queue, 0, -1))]
    assert names == [
        "reports.tasks.report_run_start",
        *["reports.tasks.report_run_gather_part"] * run.parts_total,
        "reports.tasks.report_run_render",
    ]
    assert all(client.llen(q.name) == 0 for q in topology.QUEUES if q.name != queue)
