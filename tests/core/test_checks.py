"""`manage.py check` passes as shipped and names the fix when the topology is broken."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from kombu import Queue

from proj import topology


def check_output() -> str:
    with pytest.raises(SystemCheckError) as excinfo:
        call_command("check")
    return str(excinfo.value)


def test_shipped_configuration_passes(capsys):
    call_command("check")
    assert "no issues" in capsys.readouterr().out


def test_route_to_a_queue_no_pool_consumes():
    queues = (*[Queue(q.name) for q in topology.QUEUES], Queue("shop.orphan"))
    routes = ({**topology.ROUTES, "shop.tasks.lonely": "shop.orphan"},)
    with override_settings(CELERY_TASK_QUEUES=queues, CELERY_TASK_ROUTES=routes):
        out = check_output()
    assert "core.E001" in out
    assert "'shop.orphan', which no worker pool consumes" in out
    assert "Add 'shop.orphan' to a Pool's queues" in out


def test_route_to_an_undeclared_queue():
    routes = ({"shop.tasks.lonely": "shop.nowhere"},)
    with override_settings(CELERY_TASK_ROUTES=routes):
        out = check_output()
    assert "core.E002" in out and "undeclared queue 'shop.nowhere'" in out


def test_pool_consuming_an_undeclared_queue():
    pools = (*topology.POOLS, topology.Pool("ghost", ("ghost.queue",), concurrency=1))
    with override_settings(WORKER_POOLS=pools):
        out = check_output()
    assert "core.E003" in out
    assert "Worker pool 'ghost' consumes undeclared queue 'ghost.queue'" in out


@pytest.mark.parametrize("name", ["CELERY_TASK_SERIALIZER", "CELERY_RESULT_SERIALIZER"])
def test_pickle_serializer_is_refused(name):
    with override_settings(**{name: "pickle"}):
        out = check_output()
    assert "core.E010" in out and f"{name} is 'pickle'" in out


def test_accepting_pickle_content_is_refused():
    with override_settings(CELERY_ACCEPT_CONTENT=["json", "pickle"]):
        out = check_output()
    assert "core.E011" in out and "workers must accept JSON only" in out


def test_auto_created_queues_are_refused():
    with override_settings(CELERY_TASK_CREATE_MISSING_QUEUES=True):
        out = check_output()
    assert "core.E005" in out
