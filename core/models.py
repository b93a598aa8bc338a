"""The workflow kernel's own rows: chord bookkeeping, the outbox, run events."""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone


class ChordPart(models.Model):
    """One finished chord header task, recorded once however often it is delivered.

    django-celery-results decrements its chord counter on every completion, so a header
    task delivered twice fires (or, worse, skips) the callback early. Counting distinct
    task ids here makes the callback fire exactly once, after the last distinct part.
    """

    group_id = models.CharField(max_length=255)
    task_id = models.CharField(max_length=255)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group_id", "task_id"], name="chord_part_once")
        ]

    def __str__(self) -> str:
        return f"{self.group_id}/{self.task_id}"


class OutboxMessage(models.Model):
    """A task (or canvas) to publish, recorded in the transaction that made it necessary.

    Publishing happens after commit; if the broker is down the row stays unpublished and the
    reconciler publishes it later, so a run is never committed without its work.
    """

    content_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.CASCADE)
    object_id = models.PositiveBigIntegerField(null=True, blank=True)
    run = GenericForeignKey("content_type", "object_id")
    description = models.CharField(max_length=255)
    # A Celery signature as JSON (task name, args, kwargs, options, nested canvases).
    signature = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True, db_index=True)
    task_id = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # Whoever is publishing it right now (web request or reconciler), so only one does.
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [models.Index(fields=["content_type", "object_id"])]
        verbose_name = "outbox message"

    def __str__(self) -> str:
        state = "published" if self.published_at else "waiting"
        return f"{self.description} ({state})"


class RunEvent(models.Model):
    """Something that happened to a run beyond its normal path: shown on its admin page."""

    class Kind(models.TextChoices):
        PUBLISH_FAILED = "publish_failed", "Could not publish"
        PUBLISHED_LATE = "published_late", "Published by the reconciler"
        RESUMED = "resumed", "Resumed"
        FINISHED = "finished", "Finished by the reconciler"
        GAVE_UP = "gave_up", "Gave up on items"
        FOLLOWUP = "followup", "Follow-up re-sent"
        CANCELLED = "cancelled", "Cancelled"

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveBigIntegerField()
    run = GenericForeignKey("content_type", "object_id")
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    message = models.TextField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["content_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message}"


class DeadLetter(models.Model):
    """A task that gave up: what it was, why, and what a person did about it."""

    class Reason(models.TextChoices):
        RETRIES_EXHAUSTED = "retries_exhausted", "Retries exhausted"
        FAILED = "failed", "Permanent error"
        DELIVERY_LIMIT = "delivery_limit", "Delivery limit (killed its worker)"

    task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=255, db_index=True)
    queue = models.CharField(max_length=255, db_index=True)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    reason = models.CharField(max_length=24, choices=Reason.choices)
    exception_type = models.CharField(max_length=255, blank=True)
    message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField(default=timezone.now)
    last_failed_at = models.DateTimeField(default=timezone.now, db_index=True)
    content_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.SET_NULL)
    object_id = models.PositiveBigIntegerField(null=True, blank=True)
    run = GenericForeignKey("content_type", "object_id")
    replayed_at = models.DateTimeField(null=True, blank=True)
    replayed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    replay_task_id = models.CharField(max_length=255, blank=True)
    discarded_at = models.DateTimeField(null=True, blank=True)
    discarded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-last_failed_at", "-pk"]
        permissions = [
            ("replay_deadletter", "Can replay dead letters"),
            ("discard_deadletter", "Can discard dead letters"),
            ("view_queues", "Can see the queues and their consumers"),
        ]

    def __str__(self) -> str:
        return f"Dead letter #{self.pk}: {self.task_name}"

    @property
    def is_open(self) -> bool:
        """Nobody has replayed or discarded it yet."""
        return self.replayed_at is None and self.discarded_at is None


class TaskDelivery(models.Model):
    """How often a message was delivered again without finishing (its worker died)."""

    task_id = models.CharField(max_length=255, primary_key=True)
    task_name = models.CharField(max_length=255)
    deliveries = models.PositiveIntegerField(default=1)
    first_at = models.DateTimeField(default=timezone.now)
    last_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] x{self.deliveries}"
