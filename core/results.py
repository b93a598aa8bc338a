"""A django-celery-results backend whose chords survive duplicates, failures and outages.

In this project a chord is only the fast path that finishes a run: every callback is an
immutable signature that reads the run's outcome from its rows, and the reconciler finishes
any run whose chord never fired. So this backend:
- counts distinct header tasks (upstream 2.6 counts completions, so a re-delivered header
  task fires the callback early or never, django-celery-results PR #397);
- fires the callback once every part has returned, whether the parts succeeded or failed
  (it never joins the header's results: no polling timeouts on large chords, issue #482,
  and no `chord_error_from_stack` outside an except block, which crashed the error path);
- retries its bookkeeping on transient database errors (connection dropped, server
  restarting, serialization failure) with backoff, through Celery's own
  `result_backend_always_retry` loop, after dropping the broken connection.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, router, transaction
from django.db import connections as db_connections
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import ChordCounter

from core.models import ChordPart

logger = logging.getLogger(__name__)


class ChordSafeDatabaseBackend(DatabaseBackend):
    def exception_safe_to_retry(self, exc: Exception) -> bool:
        if isinstance(exc, OperationalError | InterfaceError):
            for conn in db_connections.all(initialized_only=True):
                conn.close_if_unusable_or_obsolete()
                if conn.in_atomic_block:
                    continue
                conn.close()  # the next query opens a fresh one (or takes one from the pool)
            return True
        return super().exception_safe_to_retry(exc)

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        callback = self._ensure_retryable(self._count_part, request)
        if callback is None:
            return
        try:
            self.app.signature(callback).delay([])
        except Exception:  # broker down: the reconciler finishes the run instead
            logger.exception("Chord %s: the callback could not be published", request.group)

    def _count_part(self, request: Any) -> Any:
        """Count `request` as one distinct finished part; the callback when it was the last."""
        tid, gid = request.id, request.group
        if not gid or not tid or not request.chord:
            return None
        with transaction.atomic(using=router.db_for_write(ChordCounter)):
            counter = ChordCounter.objects.select_for_update().filter(group_id=gid).first()
            if counter is None:
                logger.info("Chord %s already fired; ignoring part %s", gid, tid)
                return None
            try:
                with transaction.atomic(using=router.db_for_write(ChordPart)):
                    ChordPart.objects.create(group_id=gid, task_id=tid)
            except IntegrityError:
                logger.warning("Chord %s: part %s delivered twice; counted once", gid, tid)
                return None
            counter.count -= 1
            if counter.count > 0:
                counter.save(update_fields=["count"])
                return None
            counter.delete()
            ChordPart.objects.filter(group_id=gid).delete()
        return request.chord
