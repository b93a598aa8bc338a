"""`manage.py check` passes as shipped and names the fix when the topology is broken."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from kombu import Queue

from core.fleet import WorkerFleet
from proj import topology
from tests.support.faults import PrivateRedis, publishing_to


def check_output() -> str:
    with pytest.raises(SystemCheckError) as excinfo:
        call_command("check")
    return str(excinfo.value)


def test_shipped_configuration_passes(capsys):
    # DEBUG on, as `make run`: this machine's Redis persists nothing on purpose (core.W031).
    with override_settings(DEBUG=True):
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


def test_a_visibility_timeout_shorter_than_a_task_can_last_is_an_error(settings):
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "visibility_timeout": 600}
    with override_settings(CELERY_BROKER_TRANSPORT_OPTIONS=options):
        out = check_output()
    assert "core.E020" in out and "visibility timeout (600 s)" in out


@pytest.fixture
def evicting_redis(tmp_path) -> Iterator[PrivateRedis]:
    """A broker Redis of our own that evicts keys when full, as a cache would."""
    server = PrivateRedis(tmp_path)
    server.start()
    server.client().config_set("maxmemory-policy", "allkeys-lru")
    yield server
    server.stop()


def test_an_evicting_broker_fails_the_check_and_is_logged_at_worker_start(
    evicting_redis, worker_fleet, tmp_path, app
):
    with override_settings(CELERY_BROKER_URL=evicting_redis.url, DEBUG=True):
        messages = run_checks(tags=["celery"], include_deployment_checks=True)
    out = "\n".join(f"{m.id} {m.msg}" for m in messages)
    assert "core.E030" in out and "maxmemory-policy allkeys-lru" in out
    assert "silently deleting queued messages" in out

    env = {**worker_fleet.env, "CELERY_BROKER_URL": evicting_redis.url}
    fleet = WorkerFleet(app, env, tmp_path / "logs", hostname="pytest-evicting")
    with publishing_to(app, evicting_redis.url):
        fleet.start((fleet.pool("callbacks"),))
    fleet.stop()
    log = fleet.log_text("callbacks")
    assert "ERROR core.worker Broker: The broker Redis has maxmemory-policy allkeys-lru" in log


def test_a_broker_that_persists_nothing_is_a_warning_in_production(evicting_redis):
    evicting_redis.client().config_set("maxmemory-policy", "noeviction")
    with override_settings(CELERY_BROKER_URL=evicting_redis.url, DEBUG=False):
        found = run_checks(tags=["celery"], include_deployment_checks=True)
        messages = [m for m in found if m.id.startswith("core.")]
    assert [m.id for m in messages] == ["core.W031"]
    assert "persists nothing" in messages[0].msg


@pytest.mark.django_db
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")  # only the pool size is read
def test_a_fleet_needing_more_connections_than_postgresql_allows_is_a_warning(settings):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's max_connections")
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        allowed = int(cursor.fetchone()[0])
    database = {**settings.DATABASES["default"]}
    database["OPTIONS"] = {**database["OPTIONS"], "pool": {"max_size": allowed}}
    with override_settings(DATABASES={**settings.DATABASES, "default": database}):
        found = run_checks(include_deployment_checks=True, tags=["database"])
    [warning] = [m for m in found if m.id == "core.W040"]
    assert f"max_connections ({allowed})" in warning.msg
    assert not [m for m in run_checks(include_deployment_checks=True) if m.id == "core.W040"]
