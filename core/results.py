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

from django.db import InterfaceError, OperationalError, router, transaction
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
        """Count `request` as one distinct finished part; the callback when it was the last.

        The part is recorded first and the counter row locked last, by one UPDATE held
        until the commit: at a run's end every chunk counts itself at once, and with the
        lock taken first they queued behind each other's round trips (25 ms on PostgreSQL).
        """
        tid, gid = request.id, request.group
        if not gid or not tid or not request.chord:
            return None
        using = router.db_for_write(ChordCounter)
        with transaction.atomic(using=using):
            if not _record_part(using, gid, tid):
                logger.warning("Chord %s: part %s delivered twice; counted once", gid, tid)
                return None
            left = _decrement(using, gid)
            if left is None:
                logger.info("Chord %s already fired; ignoring part %s", gid, tid)
                transaction.set_rollback(True, using=using)  # no part row for a gone chord
                return None
            if left > 0:
                return None
            ChordCounter.objects.using(using).filter(group_id=gid).delete()
            ChordPart.objects.using(using).filter(group_id=gid).delete()
        return request.chord


def _record_part(using: str, group_id: str, task_id: str) -> bool:
    """Insert the part unless it is there; False for a duplicate (no error to recover from)."""
    connection = db_connections[using]
    quote, meta = connection.ops.quote_name, ChordPart._meta
    columns = ", ".join(quote(meta.get_field(f).column) for f in ("group_id", "task_id"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            [group_id, task_id],
        )
        return cursor.fetchone() is not None


def _decrement(using: str, group_id: str) -> int | None:
    """Parts still to come, the counter row locked until commit; None when it is gone."""
    connection = db_connections[using]
    quote, meta = connection.ops.quote_name, ChordCounter._meta
    count = quote(meta.get_field("count").column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET {count} = {count} - 1 "
            f"WHERE {quote(meta.get_field('group_id').column)} = %s RETURNING {count}",
            [group_id],
        )
        row = cursor.fetchone()
    return None if row is None else row[0]
