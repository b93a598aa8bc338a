"""Transactional email, sent by real workers over real SMTP to the session's sink."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.urls import reverse

from core.waiting import wait_for
from devtools.smtp_sink import refuse_matching
from notifications.models import Notification
from notifications.services import notify
from proj import topology
from tests.notifications.conftest import unique_domain

pytestmark = pytest.mark.workers
BACKLOG = 500


def settled(notification: Notification, *statuses: str) -> Notification | None:
    notification.refresh_from_db()
    return notification if notification.status in statuses else None


def test_delivered_while_a_large_bulk_backlog_sits_on_the_bulk_queue(workers, smtp, app):
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    bulk_nodes = workers.nodes("notify_bulk")
    # The bulk pool stops taking bulk work, so the backlog stays put whatever the timing.
    app.control.cancel_consumer(topology.BULK_QUEUE, destination=bulk_nodes, reply=True)
    try:
        for _ in range(BACKLOG):  # lanes of a send that does not exist: routed as bulk
            app.send_task("notifications.tasks.campaign_send_lane", args=[10**9])
        # A BRPOP already waiting when the consumer was cancelled may take the first one.
        backlog = broker.llen(topology.BULK_QUEUE)
        assert backlog >= BACKLOG - 1
        address = f"ann@{unique_domain()}"

        notification = notify(
            recipient=address, key=f"test-{address}", subject="Your report is ready", body="Hi"
        )

        [received] = wait_for(lambda: smtp.messages(to=address), what="the email at the sink")
        assert received.subject == "Your report is ready"
        notification = wait_for(lambda: settled(notification, "sent"), what="sent")
        assert notification.attempts == 1 and notification.sent_at is not None
        assert notification.provider_message_id == received.message_id
        assert broker.llen(topology.BULK_QUEUE) == backlog  # still there, untouched
    finally:
        broker.delete(topology.BULK_QUEUE)
        app.control.add_consumer(topology.BULK_QUEUE, destination=bulk_nodes, reply=True)


def test_invalid_or_refused_addresses_fail_at_once_and_are_shown(workers, smtp, admin_client):
    domain = unique_domain()
    smtp.refuse = refuse_matching(r"^gone@", "550 5.1.1 No such user")
    invalid = notify(recipient="not-an-address", key=f"{domain}-1", subject="S", body="B")
    refused = notify(recipient=f"gone@{domain}", key=f"{domain}-2", subject="S", body="B")
    fine = notify(recipient=f"fine@{domain}", key=f"{domain}-3", subject="S", body="B")

    wait_for(lambda: settled(fine, "sent"), what="the valid address to be sent")
    invalid = wait_for(lambda: settled(invalid, "failed", "sent"), what="invalid")
    refused = wait_for(lambda: settled(refused, "failed", "sent"), what="refused")

    assert invalid.status == "failed" and invalid.attempts == 1
    assert invalid.error == "invalid address 'not-an-address'"
    assert refused.status == "failed" and refused.attempts == 1
    assert refused.error == "recipient refused: 550 5.1.1 No such user"
    assert [m.recipients for m in smtp.messages()] == [[f"fine@{domain}"]]
    page = admin_client.get(reverse("admin:notifications_notification_changelist"), {"q": domain})
    assert "recipient refused: 550 5.1.1 No such user" in page.text


def test_a_server_refusing_connections_is_retried_then_delivered(workers, smtp):
    address = f"bob@{unique_domain()}"
    smtp.stop()  # the provider is down: connections refused
    notification = notify(recipient=address, key=f"test-{address}", subject="S", body="B")

    def retrying() -> Notification | None:
        notification.refresh_from_db()
        return notification if notification.attempts >= 2 else None

    wait_for(retrying, what="a second attempt")
    assert notification.status in ("queued", "sending")
    assert "SMTP server unreachable: ConnectionRefusedError" in notification.error
    smtp.start()

    notification = wait_for(lambda: settled(notification, "sent", "failed"), what="sent")
    assert notification.status == "sent" and notification.error == ""
    assert notification.attempts >= 2
    assert len(smtp.messages(to=address)) == 1


def test_messages_to_a_slow_mail_server_do_not_wait_for_each_others_database_connections(
    workers, smtp
):
    if connection.vendor != "postgresql":
        pytest.skip("only PostgreSQL connections come from a pool of DB_POOL_MAX_SIZE")
    pool = settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]
    nodes = len(workers.nodes("notify")) + len(workers.nodes("notify_bulk"))
    # Each node has `pool` connections: a send that kept its connection while the server
    # took its time would let at most nodes x pool messages be in the server's hands.
    held_at_most = nodes * pool
    count = held_at_most + pool
    domain = unique_domain()
    smtp.hold = 4.0  # a loaded provider: four seconds before it accepts each message
    sent = [
        notify(recipient=f"u{i}@{domain}", key=f"{domain}-{i}", subject="S", body="B")
        for i in range(count)
    ]

    wait_for(
        lambda: (
            Notification.objects.filter(pk__in=[n.pk for n in sent], status="sent").count() == count
        ),
        timeout=60,
        what=f"{count} messages sent",
    )
    assert sum(1 for m in smtp.messages() if m.recipients[0].endswith(domain)) == count
    assert smtp.peak_in_flight > held_at_most
