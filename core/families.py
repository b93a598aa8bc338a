"""Queue families in Celery's queue table: a member is known by its name, nothing else is.

`task_create_missing_queues` stays off, so a misspelt queue still fails loudly; but a name
that belongs to a family of the topology (`imports.user.17`) is a declared queue. Installed
on the app (`install`) from core's AppConfig, so publishers, routes, replays and workers'
`add_consumer` all resolve members the same way, bound like every other queue.
"""

from __future__ import annotations

from typing import Any

from celery.app.amqp import AMQP, Queues
from kombu import Queue

from proj import topology


class FamilyQueue(Queue):
    """A member queue, declared again on every publish.

    kombu remembers per connection which queues it declared and skips declaring them
    again; a member deleted after it went idle and needed again later would then get
    messages routed nowhere. Declaring is one cheap round trip.
    """

    @property
    def can_cache_declaration(self) -> bool:
        return False


class FamilyQueues(Queues):
    """Celery's queue table, with the topology's families known by name."""

    def _member(self, name: str) -> FamilyQueue | None:
        if not isinstance(name, str) or topology.family_of(name) is None:
            return None
        return FamilyQueue(name, exchange=self.default_exchange, routing_key=name)

    def __missing__(self, name: str) -> Queue:
        member = self._member(name)
        if member is not None:
            return self._add(member)
        return super().__missing__(name)

    def add_compat(self, name: str, **options: Any) -> Queue:
        """`add_consumer` on a worker lands here: members bind as publishers bind them."""
        member = self._member(name)
        return self._add(member) if member is not None else super().add_compat(name, **options)


class FamilyAMQP(AMQP):
    queues_cls = FamilyQueues


def install(app: Any) -> None:
    """Make `app` know the families, whether or not its queue table exists yet."""
    if "amqp" not in app.__dict__:
        app.amqp_cls = FamilyAMQP
        return
    app.amqp.queues_cls = FamilyQueues
    queues = app.amqp.__dict__.get("queues")
    if queues is not None and not isinstance(queues, FamilyQueues):
        queues.__class__ = FamilyQueues  # same table, same selection: only lookups change
