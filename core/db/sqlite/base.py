"""SQLite for gevent workers: writers wait their turn without freezing the process.

SQLite lets one writer at a time hold the database. Its busy handler waits for the lock
inside C, sleeping between retries, and while it sleeps no other greenlet of the process
runs: a gevent worker with 40 tasks in flight stops answering HTTP, acknowledging messages
and heartbeats whenever another process writes. Measured on the refresh benchmark, two
processes then did the work of about 1.35.

On a gevent-patched process this backend instead:
- serialises the process's writers on a greenlet-aware lock (BEGIN IMMEDIATE and writes in
  autocommit mode take it), so at most one greenlet per process contends for SQLite's lock
  and the others yield to their neighbours while they wait;
- asks SQLite not to wait at all (busy timeout 0) and waits for another process's writer
  itself, with gevent.sleep and a growing step, up to the configured "timeout";
- keeps closed connections for the next task instead of reopening the file and registering
  Django's SQL functions per task (Celery's Django fixup closes connections around every
  task, and every task runs in a new greenlet).
Elsewhere (web, commands, prefork workers, tests) it is Django's SQLite backend unchanged.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from typing import Any

from django.db.backends.sqlite3 import base

from core.concurrency import cooperative

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")
IDLE_CONNECTIONS = 64
FIRST_STEP, LONGEST_STEP = 0.001, 0.05


class _Process:
    """Per-process state, created on first use (after gevent has patched the process)."""

    def __init__(self) -> None:
        from gevent.lock import Semaphore

        self.writer = Semaphore()
        self.idle: dict[str, list[sqlite3.Connection]] = defaultdict(list)


_process: _Process | None = None


def _state() -> _Process:
    global _process
    if _process is None:
        _process = _Process()
    return _process


def _busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def _patiently(call: Any, timeout: float) -> Any:
    """`call()`, retried while another process holds SQLite's lock, yielding meanwhile."""
    import gevent

    deadline = time.monotonic() + timeout
    step = FIRST_STEP
    while True:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() > deadline:
                raise
        gevent.sleep(step)
        step = min(step * 2, LONGEST_STEP)


class CooperativeCursor(base.SQLiteCursorWrapper):
    busy_timeout = 20.0

    def execute(self, query: str, params: Any = None) -> Any:
        return self._run(query, lambda: super(CooperativeCursor, self).execute(query, params))

    def executemany(self, query: str, param_list: Any) -> Any:
        params = list(param_list)  # a retry must send the same rows again
        return self._run(query, lambda: super(CooperativeCursor, self).executemany(query, params))

    def _run(self, query: str, call: Any) -> Any:
        if self.connection.in_transaction or not query.lstrip()[:6].upper().startswith(WRITES):
            return _patiently(call, self.busy_timeout)  # inside our transaction, or a read
        with _state().writer:  # an autocommit write: one writer per process at a time
            return _patiently(call, self.busy_timeout)


class DatabaseWrapper(base.DatabaseWrapper):
    _holds_writer = False

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        self._busy_timeout = float(params.get("timeout", 5))
        if cooperative():
            params["timeout"] = 0  # SQLite answers "busy" at once; _patiently waits
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> sqlite3.Connection:
        if cooperative():
            idle = _state().idle[self.settings_dict["NAME"]]
            if idle:
                return idle.pop()
        return super().get_new_connection(conn_params)

    def create_cursor(self, name: str | None = None) -> Any:
        if not cooperative():
            return super().create_cursor(name)
        cursor = self.connection.cursor(factory=CooperativeCursor)
        cursor.busy_timeout = getattr(self, "_busy_timeout", 20.0)
        return cursor

    def _start_transaction_under_autocommit(self) -> None:
        if not cooperative():
            return super()._start_transaction_under_autocommit()
        _state().writer.acquire()  # yields to the process's other greenlets while it waits
        self._holds_writer = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer()
            raise

    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self._release_writer()

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self._release_writer()

    def _close(self) -> None:
        connection = self.connection
        self._release_writer()
        if connection is not None and cooperative():
            if connection.in_transaction:
                connection.rollback()
            idle = _state().idle[self.settings_dict["NAME"]]
            if len(idle) < IDLE_CONNECTIONS:
                idle.append(connection)
                return
        super()._close()

    def _release_writer(self) -> None:
        if self._holds_writer:
            self._holds_writer = False
            _state().writer.release()
