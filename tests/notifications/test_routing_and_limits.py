"""Routing by kind on the broker itself, the shared limiter in Redis, and the system check."""

from __future__ import annotations

import json

import pytest
from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from core.models import OutboxMessage
from notifications import checks, limiter
from notifications.services import notify
from notifications.workflows import campaign_send_request
from proj import topology
from tests.notifications.conftest import make_campaign


def queued(client, queue: str) -> list[str]:
    return [json.loads(raw)["headers"]["task"] for raw in client.lrange(queue, 0, -1)]


@pytest.mark.django_db
def test_transactional_on_notifications_and_campaign_work_on_the_bulk_queue(app, isolated_broker):
    conn, client = isolated_broker
    notify(recipient="ann@example.com", key="k", subject="S", body="B")
    campaign_send_request(campaign=make_campaign(), trigger="admin")
    for message in OutboxMessage.objects.order_by("pk"):  # as the outbox publishes them
        canvas = app.signature(message.signature)
        for sig in getattr(canvas, "tasks", [canvas]):
            sig.apply_async(connection=conn)

    assert queued(client, topology.NOTIFY_QUEUE) == ["notifications.tasks.notification_send"]
    assert sorted(set(queued(client, topology.BULK_QUEUE))) == [
        "notifications.tasks.campaign_fan_out",
        "notifications.tasks.campaign_send_lane",
    ]
    assert len(queued(client, topology.BULK_QUEUE)) == 1 + 4  # fan-out and four lanes


def test_pools_consume_as_declared():
    pools = {p.name: p for p in topology.POOLS}
    assert pools["notify"].queues == ("notifications",)
    assert pools["notify_bulk"].queues == ("notifications.bulk", "notifications")
    assert "-Q notifications.bulk,notifications -P gevent" in " ".join(
        topology.worker_options(pools["notify_bulk"])
    )


def test_the_limit_is_counted_in_redis_for_every_worker(isolated_broker, settings):
    _, client = isolated_broker
    url = client.connection_pool.connection_kwargs
    url = f"redis://{url['host']}:{url['port']}/{url['db']}"
    # Ten per minute (a window no slow machine crosses during the test).
    assert limiter.take(6, per_second=10, seconds=60, url=url) == 0.0
    assert limiter.take(4, per_second=10, seconds=60, url=url) == 0.0
    wait = limiter.take(1, per_second=10, seconds=60, url=url)
    assert 0 < wait <= 60
    # Another worker (its own client and connection) sees the same window.
    other = MovingWindowRateLimiter(storage_from_string(url))
    assert not other.hit(RateLimitItemPerSecond(10, 60), limiter.NAMESPACE)
    with pytest.raises(ValueError, match="cannot take 11 tokens at once"):
        limiter.take(11, per_second=10, url=url)
    settings.EMAIL_BULK_MAX_PER_SECOND = 0
    assert limiter.take(1000, url=url) == 0.0  # no limit set


def test_check_wants_a_redis_for_the_limiter(settings):
    settings.EMAIL_BULK_MAX_PER_SECOND = 50
    settings.EMAIL_BULK_LIMITER_URL = ""
    [error] = checks.check_bulk_limiter()
    assert error.id == "notifications.E001"
    settings.EMAIL_BULK_LIMITER_URL = "redis://127.0.0.1:6379/3"
    assert checks.check_bulk_limiter() == []
    settings.EMAIL_BULK_MAX_PER_SECOND = 0
    settings.EMAIL_BULK_LIMITER_URL = ""
    assert checks.check_bulk_limiter() == []
