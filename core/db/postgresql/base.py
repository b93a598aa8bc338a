"""PostgreSQL through Django's psycopg pool, with a health check that survives a failover.

A failover or restart closes every connection a process holds. Django's health check
(CONN_HEALTH_CHECKS with a pool) hands the check to psycopg_pool, which tests one pooled
connection per attempt and backs off 1, 2, 4, 8, 16 s between attempts (psycopg#711): a
process with six dead connections in its pool waits 15 s or more for its next query, or
gives up after the pool's timeout (30 s). Measured in the suite: each notification node's
first message after a failover took 15.5 s.

Here the pool itself does not check; each connection is checked on checkout (the same one
round trip), and the first dead one makes the whole pool check its idle connections
(`ConnectionPool.check`, which replaces the dead ones in the background) before a new one
is taken: one failover costs a process one reconnect, not a backoff per connection.
Settings keep CONN_HEALTH_CHECKS off for this engine (proj/settings.py): the check is ours.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        pool = self.pool
        if pool is None:
            return super().get_new_connection(conn_params)
        try:
            return self._checked(conn_params)
        except psycopg.Error:
            pool.check()  # its siblings died with it: find them all now, not one per backoff
            return self._checked(conn_params)  # failing again at once: the database is down

    def _checked(self, conn_params: dict[str, Any]) -> Any:
        """A pooled connection that answered one round trip; a dead one goes back, discarded
        (the pool replaces it in the background), and its error is raised."""
        connection = super().get_new_connection(conn_params)
        try:
            ConnectionPool.check_connection(connection)
        except psycopg.Error:
            self.pool.putconn(connection)
            raise
        return connection
