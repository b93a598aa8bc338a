"""The run kernel: one status machine and one vocabulary for every workflow.

A run (a refresh, a report, an import, a campaign, a fulfilment batch) is a row that always
reaches a final state. Its work is split into items (products, report parts, rows...) whose
own status is the record of truth: the chord that normally finishes a run is only the fast
path, and the reconciler (`core.reconciler`) finishes whatever the chord did not.

Each workflow registers a `RunKind` saying how to rebuild its unfinished work; the kernel
knows nothing else about it (imports flow one way: core never imports a domain app).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from django.conf import settings
from django.contrib.contenttypes.fields import GenericRelation
from django.db import connection, models
from django.db.models import F
from django.utils import timezone

if TYPE_CHECKING:
    from celery.canvas import Signature


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    COMPLETED_WITH_ERRORS = "completed_with_errors", "Completed with errors"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED: frozenset[str] = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.COMPLETED_WITH_ERRORS,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
    }
)
UNFINISHED: frozenset[str] = frozenset({RunStatus.PENDING, RunStatus.RUNNING})

# Forward only: which statuses each status may move to. A finished run never changes again,
# which is what makes every task of every workflow safe to deliver twice.
TRANSITIONS: dict[str, frozenset[str]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING}) | FINISHED,
    RunStatus.RUNNING: FINISHED,
    **{status: frozenset() for status in FINISHED},
}


class Trigger(models.TextChoices):
    ADMIN = "admin", "Admin"
    COMMAND = "command", "Command (cron)"
    RERUN = "rerun", "Re-run"
    SCHEDULE = "schedule", "Schedule"
    SERVICE = "service", "Service"


class ItemStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


def outcome(*, succeeded: int, failed: int, cancelled: int) -> str:
    """The final status a run's item counts call for."""
    if cancelled:
        return RunStatus.CANCELLED
    if not failed:
        return RunStatus.SUCCEEDED
    if not succeeded:
        return RunStatus.FAILED
    return RunStatus.COMPLETED_WITH_ERRORS


class Run(models.Model):
    """Fields and behaviour every workflow's run shares."""

    Status: ClassVar = RunStatus
    Trigger: ClassVar = Trigger
    FINISHED: ClassVar = FINISHED

    status = models.CharField(
        max_length=24, choices=RunStatus.choices, default=RunStatus.PENDING, db_index=True
    )
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.ADMIN)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns"
    )
    # Item counters, kept current by the tasks (progress) and recomputed when the run ends.
    total = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The last time work on the run moved: the reconciler's stall clock.
    progress_at = models.DateTimeField(null=True, blank=True)
    # How often the reconciler re-published unfinished work (bounded by RUN_MAX_RESUMES).
    resumes = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    events = GenericRelation("core.RunEvent")

    class Meta:
        abstract = True
        ordering = ["-created_at", "-pk"]

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def is_settled(self) -> bool:
        """Finished, with nothing left to do afterwards (a workflow may add follow-ups)."""
        return self.is_finished

    def requester_or_permitted(self, user: Any, permission: str) -> bool:
        """The user who asked for the run, or active staff holding `permission`."""
        if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
            return False
        if self.requested_by_id is not None and self.requested_by_id == user.pk:  # type: ignore[attr-defined]
            return True
        return bool(user.is_staff and user.has_perm(permission))

    @property
    def waited(self) -> timedelta | None:
        """Time spent queued before a worker picked the run up."""
        return self.started_at - self.created_at if self.started_at else None

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class RunItem(models.Model):
    """One unit of a run's work; the run's outcome is computed from these."""

    Status: ClassVar = ItemStatus

    status = models.CharField(max_length=16, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # A transient failure scheduled another attempt at this time: the run is not stalled.
    retry_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


# --- guarded transitions ----------------------------------------------------------------
def run_transition(model: type[Run], run_id: int, to: str, **fields: Any) -> bool:
    """Move a run to `to` only from a status allowed to go there; False when refused."""
    allowed_from = [s for s, targets in TRANSITIONS.items() if to in targets]
    changed = model.objects.filter(pk=run_id, status__in=allowed_from).update(status=to, **fields)
    return bool(changed)


def run_mark_started(model: type[Run], run_id: int, **fields: Any) -> bool:
    """pending -> running, once; later calls (other chunks, duplicates) change nothing."""
    now = timezone.now()
    return run_transition(
        model, run_id, RunStatus.RUNNING, started_at=now, progress_at=now, **fields
    )


def run_add_progress(model: type[Run], run_id: int, *, succeeded: int = 0, failed: int = 0) -> None:
    """Count settled items and restart the stall clock, in one UPDATE."""
    model.objects.filter(pk=run_id).update(
        succeeded=F("succeeded") + succeeded,
        failed=F("failed") + failed,
        progress_at=timezone.now(),
    )


def run_settle(model: type[Run], run_id: int, *, error: str = "") -> str | None:
    """Finish a run from its items' statuses; the new status, or None if nothing changed.

    Refuses while any item is still pending: the work is not done, and only the reconciler
    (which knows why) may give up on items.
    """
    kind = kind_for(model)
    items = kind.items_of(run_id)
    counts = dict(items.values_list("status").annotate(n=models.Count("id")))
    if counts.get(ItemStatus.PENDING):
        return None
    succeeded = counts.get(ItemStatus.SUCCEEDED, 0)
    failed = counts.get(ItemStatus.FAILED, 0)
    status = outcome(
        succeeded=succeeded, failed=failed, cancelled=counts.get(ItemStatus.CANCELLED, 0)
    )
    now = timezone.now()
    fields: dict[str, Any] = {
        "succeeded": succeeded,
        "failed": failed,
        "finished_at": now,
        "progress_at": now,
    }
    if error:
        fields["error"] = error[:5000]
    if not run_transition(model, run_id, status, **fields):
        return None
    model.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
    return status


def run_cancel_pending(model: type[Run], run: Run, actor: Any = None) -> tuple[int, str]:
    """Cancel a run's pending items and, if there were any, settle it as cancelled;
    (items cancelled, " by <actor>" or ""). With none pending, the run's own finish step
    decides its outcome (a report still has its render to cancel, a refresh its callback)."""
    who = f" by {actor}" if getattr(actor, "pk", None) else ""
    pending = kind_for(model).items_of(run.pk).filter(status=ItemStatus.PENDING)
    # Items first, in primary-key order, then the run row: the order every task takes its
    # locks in, so a cancel and a chunk being applied never deadlock on PostgreSQL.
    # Items being applied right now (locked by their task) are left to finish: waiting for
    # each in turn, a cancel chased the workers and found nothing left to cancel (300
    # chunks, 16 slots). The run's finish step settles it once they are done.
    skip_locked = connection.features.has_select_for_update_skip_locked
    locked = list(
        pending.select_for_update(skip_locked=skip_locked)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    cancelled = pending.filter(pk__in=locked).update(
        status=ItemStatus.CANCELLED,
        error=f"cancelled{who}",
        finished_at=timezone.now(),
        retry_at=None,
    )
    if cancelled:
        run_settle(model, run.pk, error=f"Cancelled{who}.")
    return cancelled, who


# --- what the reconciler needs to know about each workflow -------------------------------
@dataclass(frozen=True)
class RunKind:
    """How the kernel drives one workflow's runs without importing it.

    `remaining_work(run)` returns the signature of everything still to do (unfinished
    items and the finish step, or the finish step alone). `followup(run)` returns work due
    after a run finished (a status callback not yet delivered), or None. `cancel(run,
    user)` stops a run. All are called inside a transaction holding the run's row lock,
    except `queued(run_id)`: whether its work still waits on the broker.
    """

    model: type[Run]
    item_model: type[RunItem]
    item_run_field: str
    remaining_work: Callable[[Any], Signature]
    cancel: Callable[[Any, Any], str]
    followup: Callable[[Any, datetime], Signature | None] | None = None
    # True while the run's work still waits on the broker behind other work (not lost): the
    # reconciler does not resume it, which would only queue its items a second time.
    queued: Callable[[int], bool] | None = None
    # Or, for work on first-in first-out queues shared with other runs: the queues the
    # run's messages wait on; the kernel tells from their oldest message whether the run's
    # are still among them (core.queues.oldest_waiting).
    queues: Callable[[Any], Iterable[str]] | None = None
    # Finished runs that may have a follow-up due (a cheap filter before `followup`).
    followup_candidates: Callable[[], models.Q] | None = None

    @property
    def label(self) -> str:
        return str(self.model._meta.verbose_name)

    def items_of(self, run_id: int) -> models.QuerySet[RunItem]:
        return self.item_model.objects.filter(**{f"{self.item_run_field}_id": run_id})


_kinds: dict[type[Run], RunKind] = {}


def register(kind: RunKind) -> RunKind:
    """Called from each workflow app's `ready()`."""
    _kinds[kind.model] = kind
    return kind


def kinds() -> list[RunKind]:
    return list(_kinds.values())


def kind_for(model: type[Run]) -> RunKind:
    try:
        return _kinds[model]
    except KeyError:
        raise LookupError(f"{model.__name__} is not registered with core.runs") from None
