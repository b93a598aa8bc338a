"""Bookkeeping the workflow machinery needs beyond django-celery-results."""

from django.db import models


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
