"""A database host that accepts connections but never answers must not wedge the pool."""

from __future__ import annotations

import contextlib
import copy
import socket
import threading
from collections.abc import Iterator

import pytest
from django.db import OperationalError, connection, connections


class HangingThenForwardingProxy:
    """Accepts TCP connections. While `hanging`, it holds them open and says nothing (a hung
    server); afterwards it forwards new ones to the real database."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.hanging = True
        self.held: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(client)
            if not self.hanging:
                try:
                    upstream = socket.create_connection(self.target)
                except OSError:
                    client.close()  # the database is down: the client sees a closed socket
                    continue
                self.held.append(upstream)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        """shutdown() first: close() alone wakes no thread blocked in accept or recv."""
        for s in (self.listener, *self.held):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture
def proxy() -> Iterator[HangingThenForwardingProxy]:
    params = connection.settings_dict
    p = HangingThenForwardingProxy((params["HOST"], int(params["PORT"] or 5432)))
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
        proxy.hanging = False
        db.pool.timeout = 20  # the pool exists now: its own setting is the one read
        db.ensure_connection()
        with db.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            assert cursor.fetchone()[0] == connection.settings_dict["NAME"]
    finally:
        db.close()
        db.close_pool()
