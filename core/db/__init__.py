"""Database engines (`core.db.sqlite`, `core.db.postgresql`) and what tasks share about them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that mean "the database was not there for a moment", never "the data is wrong".
TRANSIENT_DB_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
# Stop retrying this long before the claim ends: the sweep may run on another clock.
CLAIM_MARGIN = 1.0
RECORD_BACKOFF_MAX = 5.0


def release_pooled_connection() -> None:
    """Give this thread's pooled connection back before waiting on the network.

    A gevent node runs many greenlets on one pool of DB_POOL_MAX_SIZE connections, and a
    task keeps the connection it took until it ends: greenlets waiting on a supplier, a
    warehouse or a mail server would hold the connections the others need to record their
    results (eighteen emails to a slow mail server went twelve at a time, six per node). The
    next query takes a connection again. Nothing to do for SQLite (no pool: reopening its
    connection costs more than a chunk's queries) or inside a transaction.
    """
    if connection.settings_dict["OPTIONS"].get("pool") and not connection.in_atomic_block:
        connection.close()


def record_done(write: Callable[[], T], *, claimed_until: datetime, what: str) -> T:
    """Run `write`, the record of something already done outside (an email the server
    took, a callback delivered), retrying a lost database in place while the claim holds.

    Raised to the task instead, the write would be retried by a delivery that finds the
    claim taken and does nothing, and once the claim ran out the work would be done again:
    a second email. The pool already waits for a connection; this covers a longer outage,
    as long as another attempt can end before the claim does (then the error goes to the
    task, logged). `write` should match its rows by the claim too: an attempt that ends
    late then changes nothing that is no longer ours.
    """
    delay = 0.25
    while True:
        try:
            return write()
        except TRANSIENT_DB_ERRORS as exc:
            if connection.in_atomic_block:
                raise  # the caller's transaction is broken: only the caller can retry it
            left = (claimed_until - timezone.now()).total_seconds() - CLAIM_MARGIN
            if left <= _attempt_may_take():
                logger.error("%s, but recording it failed until its claim ran out: %s", what, exc)
                raise
            pause = min(delay, left - _attempt_may_take())
            logger.warning("%s; recording it failed (%s), trying again in %.1f s", what, exc, pause)
            connection.close()  # a dead connection goes back to the pool, discarded
            time.sleep(pause)
            delay = min(delay * 2, RECORD_BACKOFF_MAX)


def _attempt_may_take() -> float:
    """The longest one attempt may wait for the database, in seconds.

    PostgreSQL: the pool's timeout, twice (core.db.postgresql checks the pool once and
    asks again); SQLite: its busy timeout.
    """
    options = connection.settings_dict["OPTIONS"]
    pool = options.get("pool")
    if isinstance(pool, dict):
        return 2 * float(pool.get("timeout", 30))
    return float(options.get("timeout", 5))
