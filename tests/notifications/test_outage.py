"""The broker lost while a message is with the mail server: the message is sent once.

The notification nodes here run on a Redis of their own, stopped and started empty.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.fleet import WorkerFleet
from core.waiting import wait_for
from notifications.models import Notification
from notifications.services import notify
from tests.notifications.conftest import unique_domain
from tests.support.faults import PrivateRedis, Reconciler, nodes_on_private_broker, publishing_to

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
