"""A django-celery-results backend whose chords survive duplicates and large headers."""

from __future__ import annotations

import logging
from typing import Any

from celery import states
from celery.exceptions import ChordError
from celery.utils.functional import chunks
from django.db import IntegrityError, router, transaction
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import ChordCounter, TaskResult

from core.models import ChordPart

logger = logging.getLogger(__name__)

# Keep IN (...) lists well under SQLite's bound-parameter limit.
_ID_BATCH = 500


class ChordSafeDatabaseBackend(DatabaseBackend):
    """Counts distinct chord parts and gathers the header's results in one pass.

    Upstream (2.6) counts completions, so a re-delivered header task makes the counter hit
    zero early and the callback is skipped (django-celery-results PR #397); and it joins the
    header with `result_chord_join_timeout` (3 s by default) polling result by result, which
    a 2,000-task header can exceed (issue #482). Here a duplicate completion is ignored, and
    once every distinct part is in, the results are read with a few IN queries, no polling.
    """

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        tid, gid = request.id, request.group
        if not gid or not tid:
            return
        with transaction.atomic(using=router.db_for_write(ChordCounter)):
            counter = ChordCounter.objects.select_for_update().filter(group_id=gid).first()
            if counter is None:
                logger.info("Chord %s already fired; ignoring part %s", gid, tid)
                return
            try:
                with transaction.atomic(using=router.db_for_write(ChordPart)):
                    ChordPart.objects.create(group_id=gid, task_id=tid)
            except IntegrityError:
                logger.warning("Chord %s: part %s delivered twice; counted once", gid, tid)
                return
            counter.count -= 1
            if counter.count > 0:
                counter.save(update_fields=["count"])
                return
            counter.delete()
            ChordPart.objects.filter(group_id=gid).delete()
        callback = self.app.signature(request.chord)
        self._fire(callback, [r.id for r in counter.group_result(app=self.app).results])

    def _fire(self, callback: Any, task_ids: list[str]) -> None:
        rows: dict[str, TaskResult] = {}
        for batch in chunks(iter(task_ids), _ID_BATCH):
            rows.update((r.task_id, r) for r in TaskResult.objects.filter(task_id__in=batch))
        values = []
        for task_id in task_ids:
            row = rows.get(task_id)
            if row is None or row.status != states.SUCCESS:
                reason = row and self.decode_content(row, row.result)
                error = ChordError(f"Dependency {task_id} raised {reason!r}")
                self.chord_error_from_stack(callback, error)
                return
            values.append(self.decode_content(row, row.result))
        try:
            callback.delay(values)
        except Exception as exc:  # the callback could not even be published
            logger.exception("Chord callback %s could not be sent", callback)
            self.chord_error_from_stack(callback, ChordError(f"Callback error: {exc!r}"))
