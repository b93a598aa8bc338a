"""Dead letters: tasks that gave up, kept so a person can see them and send them again."""

from __future__ import annotations

import json
import logging
import traceback as tb
import uuid
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.models import DeadLetter, TaskDelivery
from core.outbox import outbox_enqueue

logger = logging.getLogger(__name__)

TRACEBACK_TAIL = 4000


def _json_safe(value: Any) -> Any:
    """Task arguments arrive JSON-decoded already; anything else is kept as its repr."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def deadletter_record(
    *,
    task_id: str,
    task_name: str,
    queue: str,
    args: Any,
    kwargs: Any,
    reason: str,
    exc: BaseException | None,
    traceback: str = "",
    attempts: int = 1,
    run_model: str | None = None,
) -> DeadLetter:
    """Create or update the dead letter of `task_id` (a duplicate delivery failing again)."""
    now = timezone.now()
    content_type = object_id = None
    if run_model:
        run_id = (kwargs or {}).get("run_id")
        if run_id is None and args:
            run_id = args[0]
        if isinstance(run_id, int):
            content_type = ContentType.objects.get_for_model(apps.get_model(run_model))
            object_id = run_id
    fields = {
        "task_name": task_name,
        "queue": queue,
        "args": _json_safe(list(args or ())),
        "kwargs": _json_safe(dict(kwargs or {})),
        "reason": reason,
        "exception_type": type(exc).__name__ if exc else "",
        "message": str(exc)[:5000] if exc else "",
        "traceback": (traceback or "")[-TRACEBACK_TAIL:],
        "attempts": attempts,
        "last_failed_at": now,
        "content_type": content_type,
        "object_id": object_id,
    }
    updated = DeadLetter.objects.filter(task_id=task_id).update(**fields)
    if not updated:
        try:
            with transaction.atomic():
                return DeadLetter.objects.create(task_id=task_id, first_failed_at=now, **fields)
        except IntegrityError:  # a concurrent duplicate created it first
            DeadLetter.objects.filter(task_id=task_id).update(**fields)
    return DeadLetter.objects.get(task_id=task_id)


def delivery_count(*, task_id: str, task_name: str) -> int:
    """Count one more delivery of a redelivered message; the total deliveries so far.

    Only redeliveries are counted (the first delivery costs nothing): a message is
    redelivered when the worker that held it died or rejected it.
    """
    now = timezone.now()
    updated = TaskDelivery.objects.filter(task_id=task_id).update(
        deliveries=F("deliveries") + 1, last_at=now
    )
    if not updated:
        try:
            with transaction.atomic():
                TaskDelivery.objects.create(task_id=task_id, task_name=task_name, deliveries=2)
        except IntegrityError:
            TaskDelivery.objects.filter(task_id=task_id).update(
                deliveries=F("deliveries") + 1, last_at=now
            )
    return TaskDelivery.objects.get(task_id=task_id).deliveries


def delivery_limit() -> int:
    return settings.TASK_MAX_DELIVERIES


def format_traceback(exc: BaseException) -> str:
    return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))


class NotReplayable(ValueError):
    """A dead letter that was already replayed or discarded."""


@transaction.atomic
def deadletter_replay(*, dead_letter_id: int, actor: Any = None) -> DeadLetter:
    """Publish the same task with the same arguments to the same queue, through the outbox."""
    from proj.celery import app

    letter = DeadLetter.objects.select_for_update().get(pk=dead_letter_id)
    if not letter.is_open:
        raise NotReplayable(f"dead letter #{letter.pk} was already {_closed_how(letter)}")
    new_id = str(uuid.uuid4())
    signature = app.signature(
        letter.task_name,
        args=letter.args,
        kwargs=letter.kwargs,
        queue=letter.queue or None,
        task_id=new_id,
    )
    outbox_enqueue(
        signature,
        description=f"replay of dead letter #{letter.pk} ({letter.task_name})",
        run=letter.run,
    )
    letter.replayed_at = timezone.now()
    letter.replayed_by = actor if getattr(actor, "pk", None) else None
    letter.replay_task_id = new_id
    letter.save(update_fields=["replayed_at", "replayed_by", "replay_task_id"])
    return letter


@transaction.atomic
def deadletter_discard(*, dead_letter_id: int, actor: Any = None) -> DeadLetter:
    letter = DeadLetter.objects.select_for_update().get(pk=dead_letter_id)
    if not letter.is_open:
        raise NotReplayable(f"dead letter #{letter.pk} was already {_closed_how(letter)}")
    letter.discarded_at = timezone.now()
    letter.discarded_by = actor if getattr(actor, "pk", None) else None
    letter.save(update_fields=["discarded_at", "discarded_by"])
    return letter


def _closed_how(letter: DeadLetter) -> str:
    if letter.replayed_at:
        return f"replayed at {timezone.localtime(letter.replayed_at):%Y-%m-%d %H:%M:%S}"
    assert letter.discarded_at is not None
    return f"discarded at {timezone.localtime(letter.discarded_at):%Y-%m-%d %H:%M:%S}"
