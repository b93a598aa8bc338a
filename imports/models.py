"""Import runs, their chunks of confirmed rows, and the registry of active user queues."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from core.runs import Run, RunItem


class ImportRun(Run):
    """One confirmed catalogue file being applied, on the run kernel (core.runs).

    Its items are chunks of confirmed rows (`ImportChunk`); the row counters below say
    what the rows did. `queue` is the broker queue its chunks were sent to: the user's own
    (`imports.user.<id>`) or a shared overflow queue when too many users were active.
    """

    file_name = models.CharField(max_length=255, help_text="what the user uploaded")
    # The stored copy in the private import storage; a name we generated, never a URL.
    stored_file = models.CharField(max_length=255, blank=True)
    queue = models.CharField(max_length=100, blank=True, db_index=True)
    chunk_size = models.PositiveIntegerField(default=20)
    rows_total = models.PositiveIntegerField(default=0)
    rows_created = models.PositiveIntegerField(default=0)
    rows_updated = models.PositiveIntegerField(default=0)
    rows_unchanged = models.PositiveIntegerField(default=0)
    rows_failed = models.PositiveIntegerField(default=0)
    price_changes = models.PositiveIntegerField(default=0)
    # Rows refused when the file was confirmed (validation), as [line, sku, message].
    rejected_rows = models.JSONField(default=list, blank=True)

    class Meta(Run.Meta):
        permissions = [
            ("control_importrun", "Can cancel and resume import runs"),
            ("view_all_imports", "Can view every import run and download its errors"),
        ]

    def __str__(self) -> str:
        return f"Import #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("admin:imports_importrun_change", args=[self.pk])

    def errors_path(self) -> str:
        return reverse("imports:errors", kwargs={"pk": self.pk})

    def can_be_seen_by(self, user: object) -> bool:
        """The requester, or staff allowed to see every import."""
        return self.requester_or_permitted(user, "imports.view_all_imports")


class ImportChunk(RunItem):
    """Up to IMPORTS_CHUNK_SIZE confirmed rows, applied together by one task."""

    run = models.ForeignKey(ImportRun, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField()
    # Cleaned rows: {"line": n, "sku": ..., and only the columns the file had}.
    rows = models.JSONField(default=list)
    # Rows the database refused when applied, as [line, sku, message].
    row_errors = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="import_chunk_once")]
        indexes = [models.Index(fields=["run", "status"])]

    def __str__(self) -> str:
        return f"import {self.run_id} chunk {self.index + 1}: {self.status}"


class ImportQueue(models.Model):
    """A broker queue of the `imports.user.` family that the imports nodes should consume.

    The registry is the record of truth: a node that starts consumes every row here before
    it takes work, the reconciler makes every node consume exactly these, and a row goes
    away only after its queue was drained, idle, unconsumed and deleted on the broker.
    """

    class Kind(models.TextChoices):
        USER = "user", "One user's"
        OVERFLOW = "overflow", "Shared (overflow)"

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        RETIRING = "retiring", "Being removed"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    # Last time work was sent to it or an import on it finished: the idle clock.
    last_used_at = models.DateTimeField()
    # Which nodes were seen consuming it, and when someone last looked.
    consumers = models.JSONField(default=list, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name = "active import queue"

    def __str__(self) -> str:
        return self.name
