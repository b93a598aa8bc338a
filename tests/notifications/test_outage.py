"""The broker or the database lost while a message is with the mail server: the message is
sent once, and recorded as sent.

The notification nodes here run on a Redis of their own, stopped and started empty, and
(PostgreSQL) reach the database through a proxy that can drop and refuse connections.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import connection

from core.fleet import WorkerFleet
from core.waiting import wait_for
from notifications.models import Notification
from notifications.services import notify
from tests.notifications.conftest import unique_domain
from tests.support.faults import (
    DatabaseProxy,
    PrivateRedis,
    Reconciler,
    nodes_on_private_broker,
    publishing_to,
)

pytestmark = pytest.mark.workers
CLAIM_SECONDS = 6


@pytest.fixture
def notify_outage(worker_fleet: WorkerFleet, tmp_path_factory) -> Iterator[PrivateRedis]:
    """The transactional node on a private Redis; claims that expire within the test."""
    with nodes_on_private_broker(
        worker_fleet, tmp_path_factory.mktemp("redis"), ("notify",), "notify-outage",
        NOTIFY_CLAIM_SECONDS=str(CLAIM_SECONDS),
    ) as server:  # fmt: skip
        yield server


def test_the_broker_lost_while_the_mail_server_has_the_message_sends_it_once(
    app, workers, smtp, notify_outage
):
    fleet: WorkerFleet = notify_outage.fleet  # type: ignore[attr-defined]
    address = f"eve@{unique_domain()}"
    smtp.hold_quit = 3.0  # the server has accepted the message and is slow to say goodbye
    with publishing_to(app, notify_outage.url):
        notification = notify(
            recipient=address, key=f"test-{address}", subject="Your order shipped", body="B"
        )
    wait_for(lambda: smtp.messages(to=address), what="the message at the mail server")
    log = fleet.log_dir / "notify.log"
    logged_before = log.stat().st_size

    notify_outage.stop()  # the broker goes while the worker still talks to the mail server
    notify_outage.start()  # back, and empty

    # The reconciler sends again what a claim that ran out left unsent.
    with Reconciler(fleet.env, fleet.log_dir / "reconciler.log"):

        def settled() -> Notification | None:
            notification.refresh_from_db()
            return notification if notification.status in ("sent", "failed") else None

        notification = wait_for(settled, timeout=4 * CLAIM_SECONDS, what="sent")
    assert notification.status == "sent" and notification.attempts == 1
    assert len(smtp.messages(to=address)) == 1
    during = log.read_bytes()[logged_before:].decode(errors="replace")
    assert "Connection to broker lost" in during
    assert "optional breaking change" not in during  # Celery's reminder, filtered


DB_OUTAGE_CLAIM_SECONDS = 20


@pytest.fixture
def notify_db_outage(workers: WorkerFleet, tmp_path_factory) -> Iterator[PrivateRedis]:
    """The transactional node on a private Redis, reaching PostgreSQL through a proxy; its
    pool waits 2 s for a connection (30 s as shipped), so an outage outlasts it quickly."""
    if connection.vendor != "postgresql":
        pytest.skip("dropping the database's connections: PostgreSQL (SQLite has none)")
    params = connection.settings_dict
    if (params["HOST"] or "").startswith("/"):
        pytest.skip("the proxy forwards TCP; this database is reached over a Unix socket")
    proxy = DatabaseProxy((params["HOST"] or "127.0.0.1", int(params["PORT"] or 5432)))
    try:
        with nodes_on_private_broker(
            workers, tmp_path_factory.mktemp("redis"), ("notify",), "notify-db-outage",
            NOTIFY_CLAIM_SECONDS=str(DB_OUTAGE_CLAIM_SECONDS), DATABASE_URL=proxy.url(params),
            DB_POOL_TIMEOUT="2",
        ) as server:  # fmt: skip
            server.proxy = proxy  # type: ignore[attr-defined]
            yield server
    finally:
        proxy.close()


def test_the_database_lost_while_the_mail_server_has_the_message_sends_it_once(
    app, smtp, notify_db_outage
):
    """The server took the message; recording it finds the database gone for longer than
    the pool waits for a connection. The record waits for the database, within the claim,
    instead of being given up, or the message would be sent again once its claim ran out."""
    fleet: WorkerFleet = notify_db_outage.fleet  # type: ignore[attr-defined]
    proxy: DatabaseProxy = notify_db_outage.proxy  # type: ignore[attr-defined]
    address = f"fay@{unique_domain()}"
    smtp.hold_quit = 3.0  # the message is accepted; the goodbye takes a while
    log = fleet.log_dir / "notify.log"
    logged_before = log.stat().st_size
    with publishing_to(app, notify_db_outage.url):
        notification = notify(
            recipient=address, key=f"test-{address}", subject="Your order shipped", body="B"
        )
    accepted = wait_for(lambda: smtp.messages(to=address), what="the message at the mail server")
    proxy.mode = "refuse"  # the database goes away before the worker records the send
    proxy.drop()

    def record_failed() -> bool:
        during = log.read_bytes()[logged_before:].decode(errors="replace")
        sent = f"Notification {notification.pk} was sent"
        return sent in during and "recording it failed" in during

    wait_for(
        record_failed,
        timeout=DB_OUTAGE_CLAIM_SECONDS / 2,
        what="the record to fail for longer than the pool waits",
    )
    proxy.mode = "forward"

    with Reconciler(fleet.env, fleet.log_dir / "reconciler.log"):

        def settled() -> Notification | None:
            notification.refresh_from_db()
            return notification if notification.status in ("sent", "failed") else None

        notification = wait_for(settled, timeout=3 * DB_OUTAGE_CLAIM_SECONDS, what="sent")
        time.sleep(2)  # a second send would follow the first's record at once
    assert notification.status == "sent" and notification.attempts == 1
    assert len(smtp.messages(to=address)) == 1
    assert notification.provider_message_id == accepted[0].message_id
