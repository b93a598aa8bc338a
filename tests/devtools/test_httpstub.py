"""The recording HTTP server under real clients: what it records, how it answers, how fast."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests

from devtools.httpstub import RecordingServer, Request, Response


def echo(request: Request) -> Response:
    delay = float(request.headers.get("x-delay", "0"))
    return Response(200, {"path": request.path, "body": request.body.decode()}, delay=delay)


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer(echo) as server:
        yield server


def raw_connection(server: RecordingServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def read_answers(sock: socket.socket, count: int) -> list[bytes]:
    """`count` whole HTTP answers (Content-Length framed) from a raw socket, in order."""
    buffer, answers = b"", []
    while len(answers) < count:
        if b"\r\n\r\n" in buffer:
            head, _, rest = buffer.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) >= length:
                answers.append(head + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk
    return answers


def test_records_what_the_client_sent(server):
    answer = requests.post(f"{server.url}/status?x=1", json={"run": 7}, headers={"X-Key": "k"})

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    [request] = server.received("POST", "/status")
    assert (request.method, request.path, request.json()) == ("POST", "/status?x=1", {"run": 7})
    assert request.headers["x-key"] == "k" and request.headers["content-type"] == "application/json"
    assert server.received("GET") == [] and server.requests == [request]


def test_answers_with_the_response_status_headers_and_body(server):
    server.handler = lambda request: Response(429, "", headers={"Retry-After": "3"})

    answer = requests.get(f"{server.url}/products/X")

    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "3" and answer.content == b""


def test_a_failing_handler_answers_500_and_the_server_goes_on(server):
    def broken(request: Request) -> Response:
        raise RuntimeError("bug in a test handler")

    server.handler = broken
    assert requests.get(f"{server.url}/x").status_code == 500
    server.handler = echo
    assert requests.get(f"{server.url}/y").json()["path"] == "/y"


def test_delayed_answers_wait_concurrently_not_in_turn(server):
    """300 connections each delayed 0.5 s: all answer in about 0.5 s, not 300 x 0.5 s.

    The bound is loose on purpose: a busy machine must not fail the suite.
    """
    sockets = [raw_connection(server) for _ in range(300)]
    started = time.monotonic()
    for n, sock in enumerate(sockets):
        sock.sendall(f"GET /{n} HTTP/1.1\r\nHost: t\r\nX-Delay: 0.5\r\n\r\n".encode())
    answers = [read_answers(sock, 1)[0] for sock in sockets]
    elapsed = time.monotonic() - started
    for sock in sockets:
        sock.close()

    assert all(answer.startswith(b"HTTP/1.1 200 OK") for answer in answers)
    assert 0.5 <= elapsed < 10
    assert len(server.received("GET")) == 300


def test_pipelined_requests_are_answered_in_order_on_a_kept_alive_connection(server):
    with raw_connection(server) as sock:
        sock.sendall(
            b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Delay: 0.2\r\n\r\n"
            b"POST /fast HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
        )
        slow, fast = read_answers(sock, 2)
    assert slow.endswith(b'{"path": "/slow", "body": ""}')
    assert fast.endswith(b'{"path": "/fast", "body": "hi"}')


def test_a_client_that_gives_up_does_not_disturb_the_next_one(server):
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{server.url}/late", headers={"X-Delay": "0.5"}, timeout=0.1)
    assert requests.get(f"{server.url}/next").json()["path"] == "/next"
    time.sleep(0.6)  # the late answer's timer fires on a closed connection: nothing happens
    assert requests.get(f"{server.url}/after").json()["path"] == "/after"


def test_http_1_0_without_keep_alive_is_closed_after_the_answer(server):
    with raw_connection(server) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        [answer] = read_answers(sock, 1)
        assert b"Connection: close" in answer
        assert sock.recv(1) == b""


def test_stop_returns_at_once_with_idle_kept_alive_clients_and_frees_the_port():
    server = RecordingServer(echo).start()
    session = requests.Session()
    assert session.get(f"{server.url}/a").status_code == 200  # the connection stays open
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5  # the idle client does not hold it up
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/b", timeout=2)


def test_the_port_is_known_before_start_and_connections_wait_in_the_backlog():
    server = RecordingServer(echo)
    try:
        with raw_connection(server) as sock:  # accepted by the kernel, answered once serving
            sock.sendall(b"GET /early HTTP/1.1\r\nHost: t\r\n\r\n")
            server.start()
            [answer] = read_answers(sock, 1)
        assert answer.endswith(b'{"path": "/early", "body": ""}')
    finally:
        server.stop()
