"""A small asynchronous HTTP server that answers through a function and records every request.

It stands in for external APIs: the supplier stand-in (`manage.py supplier_stub`) is built
on it, and the tests start it on a free port to see exactly what our code sent.

Why an event loop: the refresh benchmark and `make run` send hundreds of concurrent
kept-alive requests, each answered after a simulated latency. A thread per connection
sleeping through that latency topped out near 1,000 requests a second and let p99 climb to
seconds at 400 connections; here latency is a timer on one asyncio loop. Why asyncio's
Protocol and not tornado's HTTPServer: measured with bench/standin.py, tornado spends about
ten times more CPU per request, CPU that the workers under test share on a small machine.
Why uvloop under it: the same server on uvloop's libuv loop spends 12-45% less CPU per
request than on the standard library's loop, and varies less (bench/standin.py, `asyncio`
against `uvloop`); in the refresh benchmark the stand-in shares two cores with the workers.
The HTTP/1.1 subset is what API clients send: Content-Length bodies, keep-alive, pipelining.

The loop runs in a background thread (`start()`), so tests use the server from the pytest
process without gevent, or in the foreground (`serve_forever()`) for the management command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast

import uvloop

logger = logging.getLogger(__name__)

# The listen() backlog (the kernel caps it at net.core.somaxconn): a small one drops bursts
# of connects from hundreds of concurrent clients, each drop costing a 1 s SYN retransmit.
BACKLOG = 4096
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class Request:
    method: str
    path: str  # the request target as sent, query string included
    headers: dict[str, str]  # names in lower case
    body: bytes
    received_at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (latency, timeouts)

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, dict | list):
            return json.dumps(self.body).encode(), "application/json"
        if isinstance(self.body, str):
            return self.body.encode(), "application/json"
        return self.body, "application/octet-stream"


Handler = Callable[[Request], Response]

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_OWN_HEADERS = frozenset({"content-length", "connection", "transfer-encoding"})


def _head(status: int, headers: dict[str, str], length: int, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {length}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Connection(asyncio.Protocol):
    """One client connection: parse requests in order, answer each before the next."""

    def __init__(self, server: RecordingServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._busy = False  # a request is being answered (maybe after a delay)
        self._continued = False  # "100 Continue" already sent for the current request
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Answers are one write, but a client's request may not be: no Nagle stalls.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._parse()

    def _refuse(self, status: int) -> None:
        assert self.transport is not None
        body = _REASONS.get(status, "").encode()
        self.transport.write(_head(status, {"Content-Type": "text/plain"}, len(body), False) + body)
        self.transport.close()
        self._busy = True  # read nothing more

    def _parse(self) -> None:
        """Take complete requests off the buffer, one at a time (pipelined answers in order)."""
        while not self._busy and self._buffer:
            while self._buffer[:2] == b"\r\n":  # RFC 9112: ignore empty lines between requests
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    self._refuse(431)
                return
            request_line, *lines = self._buffer[:end].decode("latin-1").split("\r\n")
            parts = request_line.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                return self._refuse(400)
            method, target, version = parts
            headers: dict[str, str] = {}
            for line in lines:
                name, colon, value = line.partition(":")
                if not colon:
                    return self._refuse(400)
                headers[name.strip().lower()] = value.strip()
            if "transfer-encoding" in headers:  # chunked uploads: no client of ours sends them
                return self._refuse(501)
            try:
                length = int(headers.get("content-length") or 0)
            except ValueError:
                return self._refuse(400)
            if not 0 <= length <= MAX_BODY_BYTES:
                return self._refuse(413)
            start = end + 4
            if len(self._buffer) < start + length:
                if headers.get("expect", "").lower() == "100-continue" and not self._continued:
                    assert self.transport is not None
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    self._continued = True
                return
            body = bytes(self._buffer[start : start + length])
            del self._buffer[: start + length]
            self._continued = False
            connection = headers.get("connection", "").lower()
            keep_alive = (
                connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
            )
            self._busy = True
            self._server._dispatch(self, Request(method, target, headers, body), keep_alive)

    def respond(self, response: Response, method: str, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self._server.in_flight -= 1
            return  # the client gave up (a timeout test): nothing to tell it
        self._server.in_flight -= 1
        body, content_type = response.encoded()
        headers = {"Content-Type": content_type}
        for name, value in response.headers.items():
            if name.lower() == "content-type":
                headers.pop("Content-Type", None)
            if name.lower() not in _OWN_HEADERS:
                headers[name] = str(value)
        head = _head(response.status, headers, len(body), keep_alive)
        transport.write(head if method == "HEAD" else head + body)
        if not keep_alive:
            transport.close()
            return
        self._busy = False
        if self._buffer:
            self._parse()


class RecordingServer:
    """`with RecordingServer(handler) as server:` serves on server.url until the block ends.

    The port is bound on construction (so `url` is known before `start()`), and `handler`
    may be replaced at any time. It runs on the server's event loop thread and must not
    block: return a Response with `delay` to answer late. `event_loop` makes the loop
    (uvloop's; the standard library's `asyncio.new_event_loop` to compare).
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        event_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop,
    ) -> None:
        self.handler = handler
        self._event_loop = event_loop
        self.requests: list[Request] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family, backlog=BACKLOG)
        self._address: tuple[str, int] = self._socket.getsockname()[:2]  # still known after stop
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def received(self, method: str | None = None, path_prefix: str = "") -> list[Request]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and r.path.startswith(path_prefix)
            ]

    def _dispatch(self, conn: _Connection, request: Request, keep_alive: bool) -> None:
        with self._lock:  # uncontended but for readers: a fraction of a microsecond
            self.requests.append(request)
        # Requests being answered right now, and the most ever (benchmarks: did the client
        # really have that many in flight?). Only the loop thread touches these.
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            response = self.handler(request)
        except Exception as exc:  # a broken handler answers 500 instead of hanging a client
            logger.exception("stub handler failed for %s %s", request.method, request.path)
            response = Response(500, {"error": f"stub handler failed: {exc!r}"})
        if response.delay > 0:
            # A timer on the loop (what `await asyncio.sleep()` schedules, minus a Task per
            # request): latency costs no thread and next to no CPU.
            assert self._loop is not None
            self._loop.call_later(
                response.delay, conn.respond, response, request.method, keep_alive
            )
        else:
            conn.respond(response, request.method, keep_alive)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await self._loop.create_server(
            lambda: _Connection(self), sock=self._socket, backlog=BACKLOG
        )
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for conn in list(self._connections):  # kept-alive clients would wait forever
                if conn.transport is not None:
                    conn.transport.abort()
            await asyncio.sleep(0)  # let connection_lost run before the loop closes

    def serve_forever(self) -> None:
        """Serve in this thread until stop() (from another thread) or Ctrl-C."""
        try:
            with asyncio.Runner(loop_factory=self._event_loop) as runner:
                runner.run(self._serve())
        finally:
            self._socket.close()
            self._ready.set()  # a failed start must not leave start() waiting
            self._done.set()

    def start(self) -> RecordingServer:
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"RecordingServer {self.url}", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        return self

    def stop(self) -> None:
        """Stop serving, from any thread; returns once the port is released."""
        loop, stopping = self._loop, self._stopping
        if loop is None or stopping is None:  # never served: just let the port go
            self._socket.close()
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed: stopped
            loop.call_soon_threadsafe(stopping.set)
        if threading.current_thread() is not self._thread:
            self._done.wait(timeout=10)

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
