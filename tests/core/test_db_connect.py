"""A database host that accepts connections but never answers must not wedge the pool."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from django.db import OperationalError, connection, connections

from tests.support.faults import DatabaseProxy


@pytest.fixture
def proxy() -> Iterator[DatabaseProxy]:
    params = connection.settings_dict
    p = DatabaseProxy((params["HOST"], int(params["PORT"] or 5432)), mode="hang")
    yield p
    p.close()


@pytest.mark.django_db
def test_the_pool_recovers_once_a_hung_database_host_answers_again(proxy):
    if connection.vendor != "postgresql":
        pytest.skip("the connection pool is PostgreSQL's")
    if not connection.settings_dict["HOST"] or connection.settings_dict["HOST"].startswith("/"):
        pytest.skip("the proxy forwards TCP; this database is reached over a Unix socket")
    settings_dict = copy.deepcopy(connection.settings_dict)
    settings_dict.update(HOST="127.0.0.1", PORT=str(proxy.port))
    settings_dict["OPTIONS"]["pool"]["timeout"] = 3
    db = type(connections["default"])(settings_dict, alias="hung_host")
    try:
        # The host hangs: the caller gets an error (no connection within the pool's
        # timeout), not a wait without end.
        with pytest.raises(OperationalError, match="couldn't get a connection"):
            db.ensure_connection()

        # It answers again. The pool's maintenance threads were waiting on the hung
        # connections; with psycopg's default connect timeout (130 s) they would still be
        # waiting, and the pool would hand out nothing until then.
        proxy.mode = "forward"
        db.pool.timeout = 20  # the pool exists now: its own setting is the one read
        db.ensure_connection()
        with db.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            assert cursor.fetchone()[0] == connection.settings_dict["NAME"]
    finally:
        db.close()
        db.close_pool()


@pytest.mark.django_db
def test_after_a_failover_the_next_query_gets_a_live_connection_at_once():
    """Every connection a process pooled is closed by the server (a failover, a restart):
    the next query is answered, instead of the pool testing one dead connection per
    backoff step (1, 2, 4 s...) until its timeout."""
    if connection.vendor != "postgresql":
        pytest.skip("the connection pool is PostgreSQL's")
    settings_dict = copy.deepcopy(connection.settings_dict)
    settings_dict["OPTIONS"]["pool"].update(min_size=6, max_size=6, timeout=5)
    db = type(connections["default"])(settings_dict, alias="failover")
    try:
        db.pool.open(wait=True)  # six connections, idle in the pool
        pooled = [db.pool.getconn() for _ in range(6)]
        for conn in pooled:
            db.pool.putconn(conn)
        pids = [conn.info.backend_pid for conn in pooled]
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM unnest(%s) AS pid", [pids])
            assert cursor.fetchone()[0] == 6

        db.ensure_connection()  # with each dead one tested per backoff: no connection in 5 s
        with db.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone()[0] not in pids
        stats = db.pool.get_stats()
        assert stats["connections_lost"] == 5  # the other five found at once, and replaced
    finally:
        db.close()
        db.close_pool()
