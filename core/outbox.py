"""The transactional outbox: publish a run's work only after its rows exist, and never lose it.

`outbox_enqueue` records the signature in the caller's transaction and tries to publish it
right after commit. If the broker is down, the row stays unpublished and the caller can say
so ("run #N is saved and will start when the task broker is reachable again");
`outbox_flush` (run by the reconciler) publishes it when the broker is back.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from celery.canvas import Signature
from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from core.models import OutboxMessage, RunEvent

logger = logging.getLogger(__name__)

# How long one publisher holds a message before another may try; a publish takes
# milliseconds, or a few seconds when the broker does not answer.
CLAIM = timedelta(seconds=60)


class Published:
    """What became of an enqueued message once the transaction committed (in memory)."""

    DEFERRED = "deferred"  # still inside an outer transaction: not tried yet
    PUBLISHED = "published"
    FAILED = "failed"


def outbox_enqueue(
    signature: Signature, *, description: str, run: models.Model | None = None
) -> OutboxMessage:
    """Record `signature` for publishing after the current transaction commits."""
    message = OutboxMessage.objects.create(
        signature=_to_json(signature),
        description=description[:255],
        content_type=ContentType.objects.get_for_model(run) if run is not None else None,
        object_id=run.pk if run is not None else None,
    )
    message.outcome = Published.DEFERRED  # type: ignore[attr-defined]
    transaction.on_commit(lambda: outbox_publish(message))
    return message


def _to_json(signature: Signature) -> dict[str, Any]:
    """A plain-JSON copy of a (possibly nested) signature; a non-JSON argument fails here."""
    return json.loads(json.dumps(signature))


def outbox_publish(message: OutboxMessage) -> bool:
    """Publish one message if nobody else is; True when it reached the broker."""
    from proj.celery import app

    now = timezone.now()
    claimed = (
        OutboxMessage.objects.filter(pk=message.pk, published_at__isnull=True)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + CLAIM, attempts=F("attempts") + 1, last_attempt_at=now)
    )
    if not claimed:
        message.outcome = Published.DEFERRED  # type: ignore[attr-defined]
        return False
    try:
        result = app.signature(message.signature).apply_async()
    except Exception as exc:  # broker down, DNS, auth...: the reconciler tries again
        error = f"{exc.__class__.__name__}: {exc}"[:2000]
        logger.warning("Could not publish %s: %s", message, error)
        OutboxMessage.objects.filter(pk=message.pk).update(claimed_until=None, last_error=error)
        if message.attempts == 0 and message.content_type_id:  # first failure only
            _event(message, RunEvent.Kind.PUBLISH_FAILED, f"Could not reach the broker: {error}")
        message.outcome = Published.FAILED  # type: ignore[attr-defined]
        message.last_error = error
        return False
    OutboxMessage.objects.filter(pk=message.pk).update(
        published_at=timezone.now(), task_id=str(result.id or ""), claimed_until=None
    )
    message.outcome = Published.PUBLISHED  # type: ignore[attr-defined]
    return True


def outbox_flush(*, limit: int = 500) -> tuple[int, int]:
    """Publish what is due, oldest first; (published, failed). Stops at the first failure."""
    published = failed = 0
    now = timezone.now()
    due = OutboxMessage.objects.filter(published_at__isnull=True).filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    )
    for message in due[:limit]:
        late = message.attempts > 0
        if outbox_publish(message):
            published += 1
            if late and message.content_type_id:
                _event(message, RunEvent.Kind.PUBLISHED_LATE, "Published: the broker is back.")
        else:
            failed += 1
            break  # the broker is down: the rest would fail the same way
    return published, failed


def outbox_waiting(run: models.Model) -> OutboxMessage | None:
    """The oldest unpublished message of `run`, if any."""
    return (
        OutboxMessage.objects.filter(
            content_type=ContentType.objects.get_for_model(run),
            object_id=run.pk,
            published_at__isnull=True,
        )
        .order_by("created_at", "pk")
        .first()
    )


def outbox_purge(*, older_than: timedelta) -> int:
    """Forget published messages after a while; unpublished ones are kept whatever their age."""
    cutoff = timezone.now() - older_than
    deleted, _ = OutboxMessage.objects.filter(published_at__lt=cutoff).delete()
    return deleted


def _event(message: OutboxMessage, kind: str, text: str) -> None:
    RunEvent.objects.create(
        content_type_id=message.content_type_id,
        object_id=message.object_id,
        kind=kind,
        message=text,
    )
