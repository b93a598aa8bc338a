"""The supplier client against broken HTTP: what reaches the product is a clear error.

A raw TCP server answers with scripted bytes (the stand-in speaks correct HTTP only), so
these are the wire-level cases: dropped connections, short or oversized bodies, garbage.
The client runs here unpatched, on the test thread's gevent hub, as a management command
would run it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from devtools.demo import demo_sku, supplier_record
from shop import supplier as client

SKU = demo_sku(1)
GOOD = supplier_record(SKU)


class RawServer:
    """Accepts connections and lets `answer(conn, head)` write whatever it likes."""

    def __init__(self, answer: Callable[[socket.socket, bytes], None]) -> None:
        self.answer = answer
        self.connections = 0
        self.requests = 0
        self.open = 0  # connections the client has not closed yet
        self._count = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._count:
            self.open += 1
        try:
            self._answer_all(conn)
        finally:
            with self._count:
                self.open -= 1

    def _answer_all(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = conn.recv(65536)
                    except OSError:  # the client gave up on this connection
                        return
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests += 1
                try:
                    self.answer(conn, head)
                except OSError:
                    return
                if conn.fileno() < 0:  # the answer closed it
                    return

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def raw(settings) -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Callable[[socket.socket, bytes], None]) -> RawServer:
        server = RawServer(answer)
        servers.append(server)
        settings.SUPPLIER_API_URL = server.url
        return server

    yield start
    for server in servers:
        server.close()


def ok(body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_kept_alive_connection_is_reused_across_requests(raw):
    import json

    server = raw(lambda conn, head: conn.sendall(ok(json.dumps(GOOD).encode())))
    for _ in range(3):
        assert client.fetch_product(SKU).name == GOOD["name"]
    assert (server.connections, server.requests) == (1, 3)


def test_threads_that_called_the_supplier_leave_no_connection_open_once_they_are_gone(raw):
    """Each thread has its own client (gevent's sockets belong to the thread's hub); a
    process whose short-lived threads call the supplier must not keep one kept-alive
    connection per thread that ever ran."""
    import gc
    import json
    import time
    import warnings

    server = raw(lambda conn, head: conn.sendall(ok(json.dumps(GOOD).encode())))
    names = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(4):
            thread = threading.Thread(target=lambda: names.append(client.fetch_product(SKU).name))
            thread.start()
            thread.join()
        assert names == [GOOD["name"]] * 4
        assert server.connections == 4
        deadline = time.monotonic() + 10
        while server.open and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.05)
        assert server.open == 0
    # Closed by the client going away, not left to the collector.
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def test_a_supplier_that_drops_every_connection_is_retried_twice_then_a_transient_error(raw):
    server = raw(lambda conn, head: conn.close())
    with pytest.raises(client.TransientError, match="closed the connection without answering"):
        client.fetch_product(SKU)
    # Not once per pooled slot (800): the library's retry of a closed connection is capped.
    assert server.requests == 1 + client.RETRIES_ON_A_CLOSED_CONNECTION


def test_an_answer_cut_short_is_transient_and_the_next_request_uses_a_new_connection(raw):
    import json

    body = json.dumps(GOOD).encode()
    answers = iter([ok(body)[:-10], ok(body)])

    def answer(conn: socket.socket, head: bytes) -> None:
        conn.sendall(next(answers))
        if conn.fileno() >= 0 and server.requests == 1:
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    server = raw(answer)
    with pytest.raises(client.TransientError, match="reading the supplier's answer failed"):
        client.fetch_product(SKU)
    assert client.fetch_product(SKU).sku == SKU
    assert server.connections == 2


def test_an_answer_over_the_size_cap_is_refused_declared_or_not(raw, settings):
    settings.SUPPLIER_MAX_RESPONSE_BYTES = 1000
    big = b'{"sku": "' + b"x" * 5000 + b'"}'
    raw(lambda conn, head: conn.sendall(ok(big)))
    with pytest.raises(client.PermanentError, match=r"response too large \(5011 bytes, limit"):
        client.fetch_product(SKU)

    def undeclared(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + big)
        conn.close()

    raw(undeclared)
    with pytest.raises(client.PermanentError, match=r"response too large \(over 1000 bytes\)"):
        client.fetch_product(SKU)


def test_an_answer_that_is_not_http_is_a_transient_error(raw):
    def garbage(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        conn.close()

    raw(garbage)
    with pytest.raises(client.TransientError, match="the supplier's answer is not HTTP"):
        client.fetch_product(SKU)


def test_a_silent_supplier_times_out(raw, settings):
    settings.SUPPLIER_READ_TIMEOUT = 0.3
    raw(lambda conn, head: None)  # reads the request, never answers
    with pytest.raises(client.TransientError, match="supplier timed out"):
        client.fetch_product(SKU)
