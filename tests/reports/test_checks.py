"""`manage.py check` catches a report type whose queue no worker pool consumes."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from proj import topology


def test_every_report_type_has_a_pool():
    consumed = {q for p in topology.POOLS for q in p.queues}
    assert {f"reports.{i}" for i in topology.report_identifiers()} <= consumed
    assert {p.name for p in topology.POOLS} >= {
        f"reports_{i}" for i in topology.report_identifiers()
    }


def test_a_type_whose_queue_no_pool_consumes_is_an_error():
    pools = tuple(p for p in topology.POOLS if p.name != "reports_inventory")
    with override_settings(WORKER_POOLS=pools), pytest.raises(SystemCheckError) as excinfo:
        call_command("check")
    out = str(excinfo.value)
    assert "reports.E001" in out
    assert "Report type 'inventory' sends its tasks to queue 'reports.inventory'" in out
