"""Fixtures that talk to real things: Redis, the database, Celery workers, HTTP servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from kombu import Connection

from core.fleet import WorkerFleet, worker_env
from devtools.fulfilment_stub import CarrierStub, WarehouseStub
from devtools.httpstub import RecordingServer, Request, Response
from devtools.supplier_stub import SupplierStub
from proj.celery import app as celery_app
from tests.support.faults import publishing_to


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """scripts/test's second pass (PostgreSQL) skips what does not depend on the database:
    it ran in the first, and the two passes together must stay well under 15 minutes."""
    if os.environ.get("SHOP_TEST_SKIP_DATABASE_AGNOSTIC") != "1":
        return
    skip = pytest.mark.skip(reason="database-agnostic: run in scripts/test's SQLite pass")
    for item in items:
        if item.get_closest_marker("database_agnostic"):
            item.add_marker(skip)


def _redis_url(db: int) -> str:
    base = settings.CELERY_BROKER_URL.rsplit("/", 1)[0]
    return f"{base}/{db}"


@pytest.fixture(scope="session", autouse=True)
def _empty_test_broker() -> None:
    """Start every session with an empty broker database: no messages from earlier runs."""
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


@pytest.fixture(scope="session")
def app() -> Any:
    return celery_app


@pytest.fixture(scope="session")
def supplier_server() -> Iterator[SupplierStub]:
    """The supplier stand-in as a real HTTP server, for the whole session."""
    stub = SupplierStub()
    stub.server.start()
    yield stub
    stub.server.stop()


@pytest.fixture
def supplier(supplier_server: SupplierStub) -> SupplierStub:
    """The stand-in with default behaviour and no recorded requests."""
    supplier_server.reset()
    return supplier_server


@pytest.fixture(scope="session")
def warehouse_server() -> Iterator[WarehouseStub]:
    """The warehouse API stand-in (fulfilment's pick stage), for the whole session."""
    stub = WarehouseStub()
    stub.server.start()
    yield stub
    stub.server.stop()


@pytest.fixture(scope="session")
def carrier_server() -> Iterator[CarrierStub]:
    """The carrier API stand-in (fulfilment's ship stage), for the whole session."""
    stub = CarrierStub()
    stub.server.start()
    yield stub
    stub.server.stop()


@pytest.fixture(scope="session")
def worker_fleet(
    django_db_setup: None,
    django_db_blocker: Any,
    supplier_server: SupplierStub,
    warehouse_server: WarehouseStub,
    carrier_server: CarrierStub,
) -> Iterator[WorkerFleet]:
    """Every pool of the topology as a real worker subprocess, for the whole session."""
    with django_db_blocker.unblock():
        env = worker_env(connection.settings_dict)
    env["SUPPLIER_API_URL"] = supplier_server.server.url
    env["STATUS_CALLBACK_URL"] = supplier_server.server.url + "/status"
    env["FULFILMENT_WAREHOUSE_API_URL"] = warehouse_server.server.url
    env["FULFILMENT_CARRIER_API_URL"] = carrier_server.server.url
    fleet = WorkerFleet(celery_app, env, settings.VAR_DIR / "log" / "pytest-workers")
    fleet.start()
    yield fleet
    fleet.stop()


@pytest.fixture
def workers(worker_fleet: WorkerFleet, transactional_db: None) -> Iterator[WorkerFleet]:
    """Workers plus a committed (transactional) database they can see.

    A node a fault test killed (and did not restart, because it failed) is started again.
    """
    worker_fleet.ensure_running()
    yield worker_fleet
    # Before the database is emptied: no worker may still be writing this test's work.
    worker_fleet.wait_idle(settings.CELERY_BROKER_URL)


@pytest.fixture
def isolated_broker() -> Iterator[tuple[Connection, redis.Redis]]:
    """A broker database no worker consumes, to see exactly which queue a message lands on."""
    url = _redis_url(int(os.environ.get("TEST_ISOLATED_REDIS_DB", "14")))
    client = redis.Redis.from_url(url)
    client.flushdb()
    with celery_app.connection_for_write(url) as conn:
        yield conn, client
    client.flushdb()


@pytest.fixture
def unread_broker(app: Any) -> Iterator[redis.Redis]:
    """This process publishes to the isolated broker database (no worker reads it): what a
    workflow publishes stays there to be looked at; yields a client on it."""
    url = _redis_url(int(os.environ.get("TEST_ISOLATED_REDIS_DB", "14")))
    client = redis.Redis.from_url(url)
    client.flushdb()
    with publishing_to(app, url):
        yield client
    client.flushdb()


@pytest.fixture
def http_server() -> Iterator[RecordingServer]:
    """A real HTTP server on a free port; set `.handler` to script its answers."""

    def ok(request: Request) -> Response:
        return Response(200, {"ok": True})

    with RecordingServer(ok) as server:
        yield server
