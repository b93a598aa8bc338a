"""`manage.py check` catches a report type whose queue no worker pool consumes."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from proj import topology
from reports import registry


@pytest.mark.workers
def test_the_running_fleet_consumes_every_registered_report_type(app, workers):
    """Asked of the live workers: the registry's types, each with a node on its queue."""
    replies = app.control.inspect(timeout=2).active_queues() or {}
    consumed = {q["name"] for queues in replies.values() for q in queues}
    types = registry.all_types()
    assert len(types) >= 3
    for kind in types:
        assert kind.queue in consumed, f"{kind.identifier}: nobody consumes {kind.queue}"
        node = f"reports_{kind.identifier}@{workers.hostname}"
        assert [q["name"] for q in replies[node]] == [kind.queue]


def test_a_type_whose_queue_no_pool_consumes_is_an_error():
    pools = tuple(p for p in topology.POOLS if p.name != "reports_inventory")
    with override_settings(WORKER_POOLS=pools), pytest.raises(SystemCheckError) as excinfo:
        call_command("check")
    out = str(excinfo.value)
    assert "reports.E001" in out
    assert "Report type 'inventory' sends its tasks to queue 'reports.inventory'" in out
