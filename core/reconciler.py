"""The backstop that makes every run finish, whatever the broker, a worker or the database did.

One pass (`reconcile`) does, for every registered workflow:
1. publishes outbox messages that never reached the broker (it was down);
2. resumes unfinished runs that made no progress for RUN_STALL_AFTER (a killed worker, lost
   messages, a chord whose bookkeeping failed): it re-publishes only the unfinished items
   plus the finish step, or the finish step alone when every item is settled. Items that
   wait for a scheduled retry do not count as stalled. After RUN_MAX_RESUMES attempts the
   remaining items are failed with a message and the run is finished;
3. re-sends follow-ups that were due and never happened (a status callback);
4. forgets old published outbox rows and delivery counters;
5. runs the upkeep hooks domain apps registered (`register_hook`: imports sweeps idle
   per-user queues), so core needs to know nothing about them.
Every intervention is a `RunEvent` shown on the run's admin page. Runs are locked one at a
time and re-checked under the lock, so two reconcilers (cron and a loop) never both act.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import OperationalError, connection, transaction
from django.db.models import Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from core import runs
from core.models import OutboxMessage, RunEvent
from core.outbox import outbox_enqueue, outbox_flush, outbox_purge
from core.queues import oldest_waiting
from core.text import plural

logger = logging.getLogger(__name__)


@dataclass
class Pass:
    """What one reconciler pass did, for the command's output and the tests."""

    published: int = 0
    publish_failed: int = 0
    resumed: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    followups: list[str] = field(default_factory=list)
    upkeep: list[str] = field(default_factory=list)

    @property
    def acted(self) -> bool:
        return bool(
            self.published or self.resumed or self.finished or self.followups or self.upkeep
        )

    def summary(self) -> str:
        parts = [f"published {self.published}"]
        if self.publish_failed:
            parts.append("broker unreachable")
        for label, names in (
            ("resumed", self.resumed),
            ("gave up on", self.finished),
            ("re-sent follow-up of", self.followups),
        ):
            if names:
                parts.append(f"{label} {', '.join(names)}")
        return "; ".join(parts + self.upkeep)


# Upkeep a domain app adds to every pass (called with the pass's time; returns what it did
# in words, or ""). Registered from the app's ready(), like run kinds.
_hooks: list[Callable[[datetime], str]] = []


def register_hook(hook: Callable[[datetime], str]) -> Callable[[datetime], str]:
    if hook not in _hooks:
        _hooks.append(hook)
    return hook


def stall_after() -> timedelta:
    return timedelta(seconds=settings.RUN_STALL_AFTER)


def reconcile(*, now: datetime | None = None) -> Pass:
    """One pass over every workflow; safe to run concurrently and as often as wanted."""
    result = Pass()
    result.published, result.publish_failed = outbox_flush()
    queues_seen: dict[tuple[str, ...], float | None] = {}  # this pass's broker reads
    for kind in runs.kinds():
        for run_id in _stalled_run_ids(kind, now or timezone.now(), queues_seen):
            label = _resume(kind, run_id, actor=None, force=False)
            if label:
                (result.finished if label.startswith("!") else result.resumed).append(
                    label.lstrip("!")
                )
        if kind.followup is not None and kind.followup_candidates is not None:
            for run_id in kind.model.objects.filter(kind.followup_candidates()).values_list(
                "pk", flat=True
            ):
                label = _followup(kind, run_id)
                if label:
                    result.followups.append(label)
    if result.resumed or result.finished or result.followups:
        # What we just enqueued: publish it now rather than at the next pass.
        published, failed = outbox_flush()
        result.published += published
        result.publish_failed += failed
    _housekeeping()
    for hook in _hooks:
        try:
            done = hook(now or timezone.now())
        except Exception:  # one domain's trouble must not stop the others' recovery
            logger.exception("Reconciler hook %s failed", getattr(hook, "__name__", hook))
            continue
        if done:
            result.upkeep.append(done)
    return result


def run_resume(run: runs.Run, *, actor: Any = None) -> str:
    """Ask the reconciler to act on `run` now (the admin's Resume action)."""
    kind = runs.kind_for(type(run))
    label = _resume(kind, run.pk, actor=actor, force=True)
    outbox_flush()
    return label.lstrip("!") if label else ""


def _stalled_run_ids(
    kind: runs.RunKind, now: datetime, queues_seen: dict[tuple[str, ...], float | None]
) -> list[int]:
    """Unfinished runs whose last sign of life is older than the stall threshold."""
    cutoff = now - stall_after()
    candidates = kind.model.objects.filter(status__in=runs.UNFINISHED).annotate(
        alive_at=Coalesce("progress_at", "created_at")
    )
    stalled = []
    for run_id, alive_at in candidates.filter(alive_at__lt=cutoff).values_list("pk", "alive_at"):
        if _waiting_for_broker(kind, run_id, cutoff):
            # Not published yet (the outbox flush handles it), or published less than the
            # stall time ago: a run made in a long transaction is only as old as its commit.
            continue
        next_retry = (
            kind.items_of(run_id)
            .filter(status=runs.ItemStatus.PENDING)
            .aggregate(at=Max("retry_at"))["at"]
        )
        if next_retry is not None and next_retry > cutoff:
            continue  # a transient failure is being retried on schedule: not stalled
        # Asked last (round trips to the broker): its work waits its turn behind others'.
        if kind.queued is not None and kind.queued(run_id):
            continue
        if kind.queues is not None and _waiting_its_turn(kind, run_id, alive_at, queues_seen):
            continue
        stalled.append(run_id)
    return stalled


# Publishing processes' clocks may differ a little from each other.
CLOCK_SLACK = 1.0
# A queue whose next message has waited this many stall periods is not moving (nobody
# consumes it, or it is far behind): its runs count as stalled again, are resumed, and
# after RUN_MAX_RESUMES fail with a message, so that even they finish.
QUEUE_STUCK_AFTER_STALLS = 10
_BROKER_DOWN = ("broker down",)


def _waiting_its_turn(
    kind: runs.RunKind,
    run_id: int,
    alive_at: datetime,
    queues_seen: dict[tuple[str, ...], float | None],
) -> bool:
    """Whether the run's last messages may still be in its queues, behind older work.

    A backlog longer than RUN_STALL_AFTER (hundreds of reports requested at once) is no
    stall: resuming each waiting run queued its work again behind the backlog, which grew
    it, until runs gave up after RUN_MAX_RESUMES. Its queue's oldest message is no newer
    than the run's last publish (the outbox's, or the workers' around its last progress)
    while that publish is still queued; once it is newer, the run's messages have been
    taken, and a run that still makes no progress lost them. Where the broker cannot tell
    (RabbitMQ, or it is down), the run is treated as before: stalled.
    """
    assert kind.queues is not None
    run = kind.model.objects.filter(pk=run_id).first()
    if run is None or _BROKER_DOWN in queues_seen:
        return False
    names = tuple(kind.queues(run))
    if names not in queues_seen:
        try:
            queues_seen[names] = oldest_waiting(names)
        except Exception as exc:  # the broker is down: no more asking in this pass
            logger.warning("Reconciler: could not read the queues %s: %s", ", ".join(names), exc)
            queues_seen[_BROKER_DOWN] = None
            return False
    oldest = queues_seen[names]
    if oldest is None:
        return False
    stuck_after = settings.RUN_STALL_AFTER * QUEUE_STUCK_AFTER_STALLS
    if time.time() - oldest > stuck_after:
        return False
    published = OutboxMessage.objects.filter(
        content_type=ContentType.objects.get_for_model(kind.model), object_id=run_id
    ).aggregate(at=Max("published_at"))["at"]
    last = max(published, alive_at) if published else alive_at
    return oldest <= last.timestamp() + CLOCK_SLACK


def _waiting_for_broker(kind: runs.RunKind, run_id: int, cutoff: datetime) -> bool:
    return OutboxMessage.objects.filter(
        Q(published_at__isnull=True) | Q(published_at__gte=cutoff),
        content_type=ContentType.objects.get_for_model(kind.model),
        object_id=run_id,
    ).exists()


def _locked(kind: runs.RunKind, run_id: int) -> runs.Run | None:
    """The run's row, locked; None when another reconciler holds it (PostgreSQL)."""
    qs = kind.model.objects.filter(pk=run_id)
    if connection.features.has_select_for_update_skip_locked:
        qs = qs.select_for_update(skip_locked=True)
    return qs.first()


def _resume(kind: runs.RunKind, run_id: int, *, actor: Any, force: bool) -> str:
    """Re-publish a stalled run's unfinished work; '' when there was nothing to do.

    Returns the run's label, prefixed with '!' when the reconciler gave up on its items.
    """
    now = timezone.now()
    with transaction.atomic():
        run = _locked(kind, run_id)
        if run is None or run.is_finished:
            return ""
        alive_at = run.progress_at or run.created_at
        if not force and alive_at >= now - stall_after():
            return ""  # someone (a worker, another reconciler) moved it meanwhile
        label = f"{kind.model._meta.verbose_name} #{run.pk}"
        pending = kind.items_of(run.pk).filter(status=runs.ItemStatus.PENDING)
        count = pending.count()
        who = f" (asked by {actor})" if actor else ""
        gave_up = False
        if count and run.resumes >= settings.RUN_MAX_RESUMES:
            message = (
                f"not completed after {run.resumes} recovery attempts; see the dead letters "
                "and the workers' logs"
            )
            pending.update(status=runs.ItemStatus.FAILED, error=message, finished_at=now)
            _event(
                run, RunEvent.Kind.GAVE_UP, f"{plural(count, 'unfinished item')} failed: {message}."
            )
            gave_up = True
        elif count:
            _event(
                run,
                RunEvent.Kind.RESUMED,
                f"No progress since {timezone.localtime(alive_at):%Y-%m-%d %H:%M:%S}{who}: "
                f"re-published {plural(count, 'unfinished item')} and the finish step.",
                actor,
            )
        else:
            _event(
                run,
                RunEvent.Kind.FINISHED,
                f"Every item is settled but the run never finished{who}: re-published the "
                "finish step.",
                actor,
            )
        kind.model.objects.filter(pk=run.pk).update(
            resumes=run.resumes + (0 if gave_up else 1), progress_at=now
        )
        outbox_enqueue(kind.remaining_work(run), description=f"resume {label}", run=run)
    logger.warning("Reconciler: %s %s", "gave up on items of" if gave_up else "resumed", label)
    return ("!" if gave_up else "") + label


def _followup(kind: runs.RunKind, run_id: int) -> str:
    assert kind.followup is not None
    with transaction.atomic():
        run = _locked(kind, run_id)
        if run is None:
            return ""
        signature = kind.followup(run, timezone.now())
        if signature is None:
            return ""
        label = f"{kind.model._meta.verbose_name} #{run.pk}"
        _event(run, RunEvent.Kind.FOLLOWUP, "The status callback was due and not done: re-sent.")
        outbox_enqueue(signature, description=f"follow-up of {label}", run=run)
    return label


def _event(run: runs.Run, kind: str, message: str, actor: Any = None) -> None:
    RunEvent.objects.create(
        content_type=ContentType.objects.get_for_model(run),
        object_id=run.pk,
        kind=kind,
        message=message,
        actor=actor if getattr(actor, "pk", None) else None,
    )


def _housekeeping() -> None:
    outbox_purge(older_than=timedelta(days=7))
    from core.models import TaskDelivery

    TaskDelivery.objects.filter(last_at__lt=timezone.now() - timedelta(days=2)).delete()


def run_cancel(run: runs.Run, *, actor: Any = None, attempts: int = 3) -> str:
    """Cancel an unfinished run: its unfinished items are cancelled and every task skips them.

    Item rows are locked before the run row (see core.runs.run_cancel_pending); if
    PostgreSQL still picks this transaction as a deadlock's victim, it is tried again.
    """
    kind = runs.kind_for(type(run))
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic():
                current = kind.model.objects.get(pk=run.pk)
                if current.is_finished:
                    return ""
                message = kind.cancel(current, actor)
                _event(current, RunEvent.Kind.CANCELLED, message, actor)
            break
        except OperationalError as exc:
            if attempt == attempts or "deadlock" not in str(exc).lower():
                raise
            time.sleep(0.1 * attempt)
    outbox_flush()
    return message
