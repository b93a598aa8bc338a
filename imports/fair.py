"""Per-user queues with a lifecycle: made when needed, consumed by every imports node,
removed when drained and idle, never forgotten by a node that restarts.

The registry (`ImportQueue` rows) is the record of truth; the broker and the nodes are made
to agree with it:
- `queue_assign` (in the transaction that starts an import) picks the user's queue, or a
  hashed overflow queue once FAIR_MAX_QUEUES user queues are active, under a registry lock;
- `queues_sync` tells the pool's nodes, by name (`destination=`), to consume what they
  miss (all of it in one command per node) and cancel what is gone, then checks with
  `inspect active_queues` that they do: a control command answers OK before the worker
  consumes anything (celery#5221);
- a node that starts consumes every active queue before it takes work (imports.worker);
- `queues_sweep` (the reconciler's pass) retires a queue with no import in flight, no
  message and no use for FAIR_QUEUE_IDLE_SECONDS: nodes stop consuming, it is deleted
  on the broker (only if still empty), then its row. A publish declares the queue again
  (core.families.FamilyQueue), and an import that needs a retiring queue revives it.
No RabbitMQ `x-expires`: it deletes a queue after its last consumer left even while it
holds messages.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError

from core.runs import UNFINISHED
from imports.models import ImportChunk, ImportQueue, ImportRun
from proj import topology
from proj.topology.imports import USER_QUEUES

logger = logging.getLogger(__name__)
State = ImportQueue.State
Kind = ImportQueue.Kind
REGISTRY_LOCK = 0x1F0A_17  # pg_advisory_xact_lock key: one writer of the registry at a time


def _app() -> Any:
    from proj.celery import app

    return app


def family_pool() -> topology.Pool:
    return next(p for p in settings.WORKER_POOLS if p.name == USER_QUEUES.pool)


# --- assignment ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Assignment:
    queue: str
    # New or revived: the nodes must be told (queues_sync) to consume it.
    activated: bool


def _registry_lock() -> None:
    """Serialise registry writers, so the cap holds (SQLite's IMMEDIATE transactions
    already do; PostgreSQL needs a lock that also covers rows not inserted yet)."""
    if not connection.in_atomic_block:
        raise RuntimeError("queue_assign must run inside the transaction that starts the run")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [REGISTRY_LOCK])


def overflow_index(user_id: int | None) -> int:
    """A user's overflow queue: a stable hash, the same in every process."""
    return zlib.crc32(str(user_id or 0).encode()) % settings.FAIR_OVERFLOW_QUEUES


def _use(row: ImportQueue, now: datetime) -> Assignment:
    activated = row.state != State.ACTIVE
    ImportQueue.objects.filter(pk=row.pk).update(state=State.ACTIVE, last_used_at=now)
    return Assignment(row.name, activated)


def queue_assign(user: Any) -> Assignment:
    """The queue an import of `user` goes to; call inside the run's transaction."""
    _registry_lock()
    now = timezone.now()
    if getattr(user, "pk", None):
        row = ImportQueue.objects.filter(user_id=user.pk).first()
        if row is not None:
            return _use(row, now)
        if ImportQueue.objects.filter(kind=Kind.USER).count() < settings.FAIR_MAX_QUEUES:
            row = ImportQueue.objects.create(
                name=USER_QUEUES.member(user.pk), kind=Kind.USER, user_id=user.pk, last_used_at=now
            )
            return Assignment(row.name, True)
    name = USER_QUEUES.overflow_queue(overflow_index(getattr(user, "pk", None)))
    row = ImportQueue.objects.filter(name=name).first()
    if row is not None:
        return _use(row, now)
    ImportQueue.objects.create(name=name, kind=Kind.OVERFLOW, last_used_at=now)
    return Assignment(name, True)


def queue_for_resume(run: ImportRun) -> Assignment:
    """The run's queue made active again (a resume re-publishes its chunks there)."""
    _registry_lock()
    row = ImportQueue.objects.filter(name=run.queue).first()
    if row is not None:
        return _use(row, timezone.now())
    assignment = queue_assign(run.requested_by)  # gone from the registry: assign afresh
    ImportRun.objects.filter(pk=run.pk).update(queue=assignment.queue)
    run.queue = assignment.queue
    return Assignment(assignment.queue, True)


# Chunk priorities by the work the queue already holds: its first chunks outrank a long
# import's later ones. On Redis, kombu pops every consumed queue's priority-0 key before
# any priority-3 key (then 6, 9), and rotates among the queues within a level; RabbitMQ
# ignores message priority on these queues and serves them plain round-robin.
PRIORITIES = (0, 3, 6, 9)


def chunk_priority(ahead: int) -> int:
    """A chunk's priority from the chunks waiting ahead of it on its queue.

    With N = FAIR_PRIORITY_CHUNKS, a queue's first N chunks of backlog go first, then the
    next up to 4N, then up to 16N, then the rest. A user who starts a small import while
    another has thousands of chunks queued goes ahead of the big import's tail, so it
    finishes in about the time it takes alone (plain round robin gives it half the pool:
    twice that); two big imports still alternate chunk by chunk. Users who start together
    move through the levels together; one published seconds after the others catches up
    at each level, which shows as a briefly uneven share (bench/fairness.py). A user
    cannot jump the line by splitting work into many small imports: the count is of
    their queue's backlog.
    """
    first = settings.FAIR_PRIORITY_CHUNKS
    if not first:
        return PRIORITIES[0]
    for level, below in enumerate((first, 4 * first, 16 * first)):
        if ahead < below:
            return PRIORITIES[level]
    return PRIORITIES[-1]


def queue_backlog(name: str, exclude_run: int | None = None) -> int:
    """Chunks still pending on queue `name` (of other runs than `exclude_run`)."""
    pending = ImportChunk.objects.filter(run__queue=name, status=ImportChunk.Status.PENDING)
    return pending.exclude(run_id=exclude_run).count()


def queue_touch(name: str) -> None:
    """Restart a queue's idle clock (an import on it finished)."""
    ImportQueue.objects.filter(name=name).update(last_used_at=timezone.now())


# --- the broker ---------------------------------------------------------------------------
def broker_depth(name: str, app: Any = None) -> int:
    """Messages waiting in queue `name` (0 when the broker has no such queue)."""
    app = app or _app()
    with app.connection_for_write() as conn:
        return _depth(conn, name)


def _depth(conn: Any, name: str) -> int:
    try:
        _, count, _ = conn.default_channel.queue_declare(queue=name, passive=True)
    except conn.channel_errors:
        return 0
    return int(count)


def broker_holds(name: str, app: Any = None) -> bool:
    """Whether queue `name` holds messages; False when the broker cannot be asked now."""
    app = app or _app()
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            return _depth(conn, name) > 0
    except (OSError, OperationalError) as exc:
        logger.warning("Could not read the depth of %s: %s", name, exc)
        return False


def broker_delete(name: str, app: Any = None) -> bool:
    """Delete queue `name` on the broker if it is empty; False when it was not."""
    app = app or _app()
    with app.connection_for_write() as conn:
        try:
            bound = app.amqp.queues[name](conn.default_channel)
            # Declaring first: a Redis channel only deletes the bindings it knows of.
            bound.declare()
            if conn.transport.driver_type == "redis" and _depth(conn, name):
                return False
            bound.delete(if_empty=True)
        except conn.channel_errors as exc:  # RabbitMQ: PRECONDITION_FAILED, not empty
            logger.warning("Queue %s not deleted: %s", name, exc)
            return False
    return True


# --- the nodes ----------------------------------------------------------------------------
def pool_nodes(app: Any = None, timeout: float | None = None) -> dict[str, set[str]]:
    """Every live node of the family's pool and the queues it consumes right now.

    A node belongs to the pool when it consumes the pool's own queue (`imports.nodes`):
    whatever the host calls it, and no node of another pool ever gets a user queue.
    """
    app = app or _app()
    timeout = settings.FAIR_CONTROL_TIMEOUT if timeout is None else timeout
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    anchors = set(family_pool().queues)
    nodes = {}
    for node, queues in replies.items():
        names = {q["name"] for q in queues or ()}
        if anchors <= names:
            nodes[node] = names
    return nodes


def _consuming(app: Any, nodes: list[str], timeout: float) -> dict[str, set[str]]:
    if not nodes:
        return {}
    replies = app.control.inspect(destination=nodes, limit=len(nodes), timeout=timeout)
    return {n: {q["name"] for q in qs or ()} for n, qs in (replies.active_queues() or {}).items()}


@dataclass
class SyncResult:
    nodes: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)  # "queue@node" (node without host)
    cancelled: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.added:
            parts.append(f"consuming {', '.join(self.added)}")
        if self.cancelled:
            parts.append(f"stopped consuming {', '.join(self.cancelled)}")
        if self.unconfirmed:
            parts.append(f"NOT confirmed: {', '.join(self.unconfirmed)}")
        return "user queues: " + "; ".join(parts) if parts else ""


def queues_sync_needed() -> bool:
    """Whether an active queue was assigned since the last sync saw it consumed.

    Many imports starting together each ask for a sync; the first one covers them all,
    and the others need not spend a control round trip (and an imports slot) each. The
    reconciler's pass syncs regardless, so a node that lost its queues is still caught.
    """
    return (
        ImportQueue.objects.filter(state=State.ACTIVE)
        .filter(Q(checked_at__isnull=True) | Q(checked_at__lt=F("last_used_at")) | Q(consumers=[]))
        .exists()
    )


def queues_sync(*, app: Any = None, wait: float = 5.0) -> SyncResult:
    """Make every node of the pool consume exactly the active queues, and check it does."""
    app = app or _app()
    timeout = settings.FAIR_CONTROL_TIMEOUT
    wanted = set(ImportQueue.objects.filter(state=State.ACTIVE).values_list("name", flat=True))
    nodes = pool_nodes(app, timeout)
    result = SyncResult(nodes=sorted(nodes))
    to_add: dict[str, list[str]] = {}
    to_cancel: dict[str, list[str]] = {}
    for node, consumed in nodes.items():
        for queue in wanted - consumed:
            to_add.setdefault(queue, []).append(node)
        for queue in {q for q in consumed if USER_QUEUES.owns(q)} - wanted:
            to_cancel.setdefault(queue, []).append(node)
    # One command per node with every queue it misses (imports.worker.imports_consume):
    # the queues join its round robin together, not one round trip after another.
    by_node: dict[str, list[str]] = {}
    for queue, targets in sorted(to_add.items()):
        for node in targets:
            by_node.setdefault(node, []).append(queue)
        result.added += [f"{queue}@{n.split('@')[0]}" for n in targets]
    for node, queues in sorted(by_node.items()):
        app.control.broadcast(
            "imports_consume", arguments={"queues": queues}, destination=[node],
            reply=True, timeout=timeout,
        )  # fmt: skip
    for queue, targets in sorted(to_cancel.items()):
        app.control.cancel_consumer(queue, destination=targets, reply=True, timeout=timeout)
        result.cancelled += [f"{queue}@{n.split('@')[0]}" for n in targets]
    # "OK" from a control command only means the command was received: look at what they consume.
    seen = dict(nodes)
    if to_add or to_cancel:
        deadline = time.monotonic() + wait
        while True:
            seen = _consuming(app, sorted(nodes), timeout)
            agreed = all(
                {q for q in seen.get(n, set()) if USER_QUEUES.owns(q)} == wanted for n in nodes
            )
            if agreed or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for node in nodes:
            family = {q for q in seen.get(node, set()) if USER_QUEUES.owns(q)}
            result.unconfirmed += [f"{q}@{node}" for q in sorted(family ^ wanted)]
    _record_consumers(seen)
    if result.unconfirmed:
        logger.warning("Imports nodes do not consume as told: %s", result.unconfirmed)
    return result


def queues_announce(names: list[str], app: Any = None) -> None:
    """Tell every node to consume `names` now, without waiting for answers.

    Sent when an import's transaction commits, so a new user's first chunks need not wait
    for the sync task's round trips (an `inspect` that waits out FAIR_CONTROL_TIMEOUT);
    the sync still checks that every node consumes them. Broadcast to all nodes: those
    outside the imports pool refuse the command (imports.worker.imports_consume).
    """
    app = app or _app()
    try:
        app.control.broadcast("imports_consume", arguments={"queues": names}, reply=False)
    except Exception as exc:  # broker down: the sync (an outbox message) will do it
        logger.warning("Could not announce user queues %s: %s", names, exc)


def _record_consumers(seen: dict[str, set[str]]) -> None:
    now = timezone.now()
    for row in ImportQueue.objects.all():
        consumers = sorted(n for n, queues in seen.items() if row.name in queues)
        ImportQueue.objects.filter(pk=row.pk).update(consumers=consumers, checked_at=now)


# --- the sweep ----------------------------------------------------------------------------
def _in_use(name: str) -> bool:
    return ImportRun.objects.filter(queue=name, status__in=UNFINISHED).exists()


def queues_sweep(*, now: datetime | None = None, app: Any = None) -> list[str]:
    """Remove queues drained and idle for FAIR_QUEUE_IDLE_SECONDS; the names removed."""
    app = app or _app()
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.FAIR_QUEUE_IDLE_SECONDS)
    candidates = ImportQueue.objects.filter(
        Q(state=State.RETIRING) | Q(state=State.ACTIVE, last_used_at__lt=cutoff)
    ).values_list("name", flat=True)
    removed: list[str] = []
    revived = False
    nodes: dict[str, set[str]] | None = None
    for name in list(candidates):
        with transaction.atomic():
            row = ImportQueue.objects.select_for_update().filter(name=name).first()
            if row is None:
                continue
            if row.state == State.ACTIVE:
                if row.last_used_at >= cutoff or _in_use(name) or broker_depth(name, app):
                    continue
                ImportQueue.objects.filter(pk=row.pk).update(state=State.RETIRING)
        # No lock held while the nodes stop consuming: that takes a round trip or two.
        if nodes is None:
            nodes = pool_nodes(app)
        consumers = sorted(n for n, queues in nodes.items() if name in queues)
        if consumers and not _cancel(app, name, consumers):
            continue  # a node did not confirm: try again at the next pass
        with transaction.atomic():
            row = ImportQueue.objects.select_for_update().filter(name=name).first()
            if row is None or row.state != State.RETIRING:
                continue  # an import revived it meanwhile
            if _in_use(name) or not broker_delete(name, app):
                ImportQueue.objects.filter(pk=row.pk).update(state=State.ACTIVE)
                revived = True
                continue
            row.delete()
        removed.append(name)
        logger.info("Removed idle user queue %s", name)
    if revived:
        queues_sync(app=app)
    return removed


def _cancel(app: Any, name: str, nodes: list[str], wait: float = 5.0) -> bool:
    timeout = settings.FAIR_CONTROL_TIMEOUT
    app.control.cancel_consumer(name, destination=nodes, reply=True, timeout=timeout)
    deadline = time.monotonic() + wait
    while True:
        seen = _consuming(app, nodes, timeout)
        if all(name not in seen.get(n, {name}) for n in nodes):
            return True
        if time.monotonic() > deadline:
            logger.warning("Nodes still consume %s after cancel_consumer: %s", name, nodes)
            return False
        time.sleep(0.1)


def fair_upkeep(now: datetime) -> str:
    """The reconciler's hook: nodes agree with the registry; idle queues go; old uploads go."""
    from imports.storage import forget_pending

    done = []
    forget_pending(older_than=24 * 3600)
    if ImportQueue.objects.exists():
        synced = queues_sync()
        if synced.summary():
            done.append(synced.summary())
        removed = queues_sweep(now=now)
        if removed:
            done.append(f"removed idle user queues {', '.join(removed)}")
    return "; ".join(done)
