"""Bulk writes that cost one prepared statement, not one CASE expression per row and column.

Django's `bulk_update` builds `SET f = CASE WHEN id=1 THEN .. WHEN id=2 THEN .. END` for
every field: its cost grows with rows x fields in Python before the database sees anything
(40% of the refresh's CPU). Here one `UPDATE t SET f1=%s, f2=%s WHERE id=%s` is sent with
`executemany` on SQLite, and as one `UPDATE ... FROM unnest(...)` on PostgreSQL; values go
through each field's own `get_db_prep_save`, so decimals, datetimes and JSON are
adapted exactly as `save()` would adapt them.

On PostgreSQL the arrays travel in binary, bound by the server (see `_execute_binary`).

`bulk_insert_rows` is the same idea for inserts of many narrow rows (a run's items):
`bulk_create` builds a model instance and prepares every field of every row in Python,
ten times the cost of the statement itself for 10,000 items (0.27 s on SQLite, while
the workers wait for the run's first message).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connections, models, router


def bulk_update_rows(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Iterable[tuple[Any, Sequence[Any]]],
) -> int:
    """UPDATE `fields` of each `(pk, values)` row; the number of rows sent."""
    using = router.db_for_write(model)
    connection = connections[using]
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    sql = "UPDATE {} SET {} WHERE {} = %s".format(
        quote(meta.db_table),
        ", ".join(f"{quote(f.column)} = %s" for f in columns),
        quote(meta.pk.column),
    )
    preparers = [_preparer(f, connection) for f in columns]
    prepare_pk = _preparer(meta.pk, connection)
    params = [
        [prepare(v) for prepare, v in zip(preparers, values, strict=True)] + [prepare_pk(pk)]
        for pk, values in rows
    ]
    if not params:
        return 0
    if connection.vendor == "postgresql":
        _update_from_values(connection, meta, columns, params)
    else:
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
    return len(params)


def bulk_insert_rows(
    model: type[models.Model], fields: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """INSERT one row per `rows` entry with `fields` set, every other column at its default.

    The defaults are prepared once, not per row; no instances are built, no pks come back,
    and no signals are sent (use `bulk_create` when any of that matters).
    """
    using = router.db_for_write(model)
    connection = connections[using]
    meta = model._meta
    given = [meta.get_field(name) for name in fields]
    defaults = [
        f for f in meta.concrete_fields if f not in given and not (f.primary_key and f.db_returning)
    ]
    default_values = [f.get_db_prep_save(f.get_default(), connection) for f in defaults]
    columns = given + defaults
    preparers = [_preparer(f, connection) for f in given]
    params = [
        [prepare(v) for prepare, v in zip(preparers, values, strict=True)] + default_values
        for values in rows
    ]
    if not params:
        return 0
    quote = connection.ops.quote_name
    insert = "INSERT INTO {} ({}) ".format(
        quote(meta.db_table), ", ".join(quote(f.column) for f in columns)
    )
    if connection.vendor == "postgresql":
        source, arrays = _unnest(connection, columns, params)
        _execute_binary(connection, f"{insert}SELECT * FROM {source}", arrays)
    else:
        with connection.cursor() as cursor:
            cursor.executemany(insert + "VALUES (" + ", ".join(["%s"] * len(columns)) + ")", params)
    return len(params)


_MISSING = object()


def _preparer(field: models.Field, connection: Any) -> Any:
    """`field.get_db_prep_save(value, connection)`, prepared once per distinct value.

    A chunk's rows repeat most values (one timestamp, a status, an empty error, an attempt
    count), and Django prepares a datetime, integer or decimal in 2-3 us: 2.9 ms of a
    refresh chunk's ~32 ms of CPU, 1.8 ms with this. Values equal by type and value
    prepare alike; unhashable ones (a JSON dict) are prepared every time.
    """
    prepare, cache = field.get_db_prep_save, {}

    def prepared(value: Any) -> Any:
        try:
            key = (value.__class__, value)
            hit = cache.get(key, _MISSING)
        except TypeError:  # unhashable
            return prepare(value, connection)
        if hit is _MISSING:
            hit = cache[key] = prepare(value, connection)
        return hit

    return prepared


def _update_from_values(
    connection: Any, meta: Any, columns: list[Any], params: list[list[Any]]
) -> None:
    """PostgreSQL: `UPDATE t SET f = v.f FROM unnest(..) v WHERE t.id = v.id`, one statement.

    psycopg's pipelined executemany waits on the socket once per row, and under gevent that
    wait cost a quarter of the refresh's CPU; a VALUES list of 900 placeholders then cost a
    fifth, psycopg parsing the query text anew every time (too long for its cache).
    """
    quote = connection.ops.quote_name
    table, pk = quote(meta.db_table), meta.pk
    names = [f"c{i}" for i in range(len(columns))] + ["pk"]
    sets = ", ".join(f"{quote(f.column)} = v.c{i}" for i, f in enumerate(columns))
    source, arrays = _unnest(connection, [*columns, pk], params)
    _execute_binary(
        connection,
        f"UPDATE {table} SET {sets} FROM {source} AS v ({', '.join(names)}) "
        f"WHERE {table}.{quote(pk.column)} = v.pk",
        arrays,
    )


def _unnest(connection: Any, columns: list[Any], params: list[list[Any]]) -> tuple[str, list[Any]]:
    """PostgreSQL `unnest(%s::type[], ..)` of the rows' columns: one array parameter per
    column, so the query text stays short and the same whatever the number of rows (as
    Django's own bulk_create does on PostgreSQL). Typed arrays: a NULL in the first row
    must not make the column `text`.
    """
    types = [f.cast_db_type(connection) for f in columns]
    source = "unnest(" + ", ".join(f"%b::{t}[]" for t in types) + ")"
    return source, [list(column) for column in zip(*params, strict=True)]


def _execute_binary(connection: Any, sql: str, params: list[Any]) -> None:
    """Run `sql` (`%b` placeholders) with its parameters bound by the server, in binary.

    Django's psycopg cursor binds on the client: it renders every array element as quoted
    text, a regular expression call per string (a quarter of a refresh chunk's write CPU,
    and the server parses it all back). A server-binding cursor on the same connection
    sends the arrays in binary as they are; wrapped as Django wraps its own cursors, so
    errors are Django's, and query logging and execute wrappers still see the statement.
    """
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.ensure_connection()
    raw = ServerBindingCursor(connection.connection)
    if connection.queries_logged:
        cursor = connection.make_debug_cursor(raw)
    else:
        cursor = connection.make_cursor(raw)
    with cursor:
        cursor.execute(sql, params)
