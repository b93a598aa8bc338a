"""Database engines (`core.db.sqlite`, `core.db.postgresql`) and what tasks share about them."""

from __future__ import annotations

from django.db import connection


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
