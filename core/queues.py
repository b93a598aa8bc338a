"""What operators need to know about each queue: depth, age, consumers, pool, dead letters.

Read from the broker itself through kombu (a passive queue declare works on Redis and
RabbitMQ alike), from the workers (a broadcast `active_queues`, cached for a few seconds so
a page view does not flood the nodes), and from the topology. The oldest message's age
comes from a `published_at` header every publish stamps (Redis keeps no such time); on
RabbitMQ a message cannot be looked at without taking it, so the age is not shown there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from celery.signals import before_task_publish
from django.core.cache import cache
from kombu.exceptions import ChannelError

from proj import topology

CONSUMERS_CACHE_KEY = "core.queues.consumers"
CONSUMERS_TTL = 10  # seconds


@before_task_publish.connect
def stamp_publish_time(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """Every message carries when it was published: the queue page's "oldest" column, and
    the reconciler's test of whether a run's work still waits. Set on every publish: a
    retry copies its message's headers, and must not look as old as the first attempt."""
    if headers is not None:
        headers["published_at"] = time.time()


@dataclass
class QueueRow:
    name: str
    purpose: str
    pools: list[str]
    depth: int | None = None
    oldest_seconds: float | None = None
    consumers: list[str] = field(default_factory=list)
    dead_letters: int = 0
    error: str = ""

    @property
    def warning(self) -> str:
        if self.error:
            return self.error
        if self.depth and not self.consumers:
            return f"{self.depth} messages and no consumer: nothing will run them"
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "warning": self.warning}


def consumers(*, refresh: bool = False, timeout: float = 1.0) -> dict[str, list[str]]:
    """queue -> nodes consuming it, from a broadcast, cached for CONSUMERS_TTL seconds."""
    from proj.celery import app

    found = None if refresh else cache.get(CONSUMERS_CACHE_KEY)
    if found is None:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
        found = {}
        for node, queues in replies.items():
            for queue in queues:
                found.setdefault(queue["name"], []).append(node)
        found = {queue: sorted(nodes) for queue, nodes in found.items()}
        cache.set(CONSUMERS_CACHE_KEY, found, CONSUMERS_TTL)
    return found


def _oldest_published(channel: Any, queue: str) -> float | None:
    """Redis only: the next message out is the list's right end (LPUSH, BRPOP)."""
    client = getattr(channel, "client", None)
    if client is None or not hasattr(client, "lindex"):
        return None
    raw = client.lindex(queue, -1)
    if raw is None:
        return None
    try:
        published = json.loads(raw)["headers"].get("published_at")
        return float(published) if published else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _read_queue(conn: Any, name: str) -> tuple[int, float | None]:
    """How many messages `name` holds, and when its next one out was published.

    A channel per queue: RabbitMQ closes the channel that asked about a queue it does not
    have (and an empty Redis list does not exist: depth 0 either way).
    """
    with conn.channel() as channel:
        try:
            _, depth, _ = channel.queue_declare(queue=name, passive=True)
        except (ChannelError, *conn.channel_errors):
            return 0, None
        return depth, _oldest_published(channel, name) if depth else None


def oldest_waiting(queues: Iterable[str]) -> float | None:
    """When the oldest message still waiting in any of `queues` was published (epoch
    seconds); None when they are empty, or when a queue holding messages cannot tell
    (RabbitMQ shows no message without taking it). Broker errors are raised, at once.

    On a first-in first-out queue everything published after its oldest message is still
    there: work published at T waits its turn while the oldest is no newer than T.
    """
    from proj.celery import app

    oldest: float | None = None
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=0)  # one attempt: the reconciler moves on
        for name in queues:
            depth, published = _read_queue(conn, name)
            if not depth:
                continue
            if published is None:
                return None
            oldest = published if oldest is None else min(oldest, published)
    return oldest


def queue_overview(*, refresh: bool = False) -> list[QueueRow]:
    """One row per declared queue, from the broker, the workers and the topology."""
    from core.admin import open_dead_letters_per_queue
    from proj.celery import app

    dead = dict(open_dead_letters_per_queue())
    pools: dict[str, list[str]] = {}
    for pool in topology.POOLS:
        for queue in pool.queues:
            pools.setdefault(queue, []).append(pool.name)
    rows = [
        QueueRow(q.name, q.purpose, pools.get(q.name, []), dead_letters=dead.get(q.name, 0))
        for q in topology.QUEUES
    ]
    try:
        consuming = consumers(refresh=refresh)
    except Exception as exc:  # broker down: say so on every row, still show the rest
        consuming = {}
        for row in rows:
            row.error = f"the broker does not answer: {exc}"
    now = time.time()
    try:
        with app.connection_for_read() as conn:
            rows += _family_rows(conn, consuming, dead)
            for row in rows:
                row.depth, published = _read_queue(conn, row.name)
                row.oldest_seconds = None if published is None else max(0.0, now - published)
                row.consumers = consuming.get(row.name, [])
    except Exception as exc:
        for row in rows:
            row.error = row.error or f"the broker does not answer: {exc}"
    return rows


def _family_rows(
    conn: Any, consuming: dict[str, list[str]], dead: dict[str, int]
) -> list[QueueRow]:
    """The live members of each queue family: what the workers consume, and on Redis the
    queues holding messages (a member nobody consumes is exactly what must show)."""
    rows = []
    client = getattr(conn.default_channel, "client", None)
    for family in topology.FAMILIES:
        members = {name for name in consuming if family.owns(name)}
        if client is not None and hasattr(client, "scan_iter"):
            for prefix in (family.prefix, family.overflow_prefix):
                for key in client.scan_iter(match=f"{prefix}*", count=500):
                    name = key.decode() if isinstance(key, bytes) else key
                    if family.owns(name):
                        members.add(name)
        purpose = f"{family.purpose} (family {family.prefix}<id>)"
        rows += [
            QueueRow(name, purpose, [family.pool], dead_letters=dead.get(name, 0))
            for name in sorted(members)
        ]
    return rows
