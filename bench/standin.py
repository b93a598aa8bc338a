"""Benchmark the supplier stand-in: the old thread-per-connection server against the new one.

    .venv/bin/python bench/standin.py [--latency-ms 50] [--connections 50 400]
                                      [--duration 8] [--warmup 2]
                                      [--impl threaded tornado asyncio uvloop]

Why: the refresh benchmark and `make run` must measure our workers, not the stand-in. A
stand-in that answers at 50 ms should serve connections / 0.05 s requests a second until
its CPU runs out. This starts the stand-in (`SupplierStub`, the demo catalogue, the given
latency) in a subprocess per implementation, then hammers GET /products/<sku> from N
kept-alive connections (greenlets on raw gevent sockets in this process: a client cheap
enough not to be the bottleneck) and prints requests a second, p50, p99, errors and the CPU
seconds the server process used, side by side in one run, as a markdown table.

`threaded` is the server this project used before (http.server, a thread per connection, a
sleeping thread per delayed answer), kept here as the baseline; `tornado` is the alternative
considered (tornado's HTTPServer on its own loop, timers for latency); `uvloop` is
devtools.httpstub.RecordingServer (an asyncio Protocol on its own uvloop loop, timers for
latency) and `asyncio` the same server on the standard library's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
IMPLEMENTATIONS = ("threaded", "tornado", "asyncio", "uvloop")


# -- the baseline: the stand-in's server before the rewrite --------------------------------


def threaded_server(handler: Any, host: str = "127.0.0.1", port: int = 0) -> Any:
    """The old RecordingServer: ThreadingHTTPServer, time.sleep() for latency, backlog 1024."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from devtools.httpstub import Request

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

    class Threaded:
        def __init__(self) -> None:
            self.handler = handler
            self.requests: list[Request] = []
            self._lock = threading.Lock()
            outer = self

            class RequestHandler(BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"
                disable_nagle_algorithm = True

                def _serve(self) -> None:
                    length = int(self.headers.get("Content-Length") or 0)
                    request = Request(
                        method=self.command,
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=self.rfile.read(length) if length else b"",
                    )
                    with outer._lock:
                        outer.requests.append(request)
                    response = outer.handler(request)
                    if response.delay:
                        time.sleep(response.delay)
                    body, content_type = response.encoded()
                    try:
                        self.send_response(response.status)
                        headers = {"Content-Type": content_type, **response.headers}
                        for name, value in headers.items():
                            self.send_header(name, value)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

                do_GET = do_POST = _serve

                def log_message(self, format: str, *args: Any) -> None:
                    pass

            self.httpd = Server((host, port), RequestHandler)

        @property
        def url(self) -> str:
            host, port = self.httpd.server_address[:2]
            return f"http://{host}:{port}"

        def serve_forever(self) -> None:
            self.httpd.serve_forever()

        def stop(self) -> None:
            self.httpd.server_close()

    return Threaded()


def tornado_server(handler: Any, host: str = "127.0.0.1", port: int = 0) -> Any:
    """The alternative considered: tornado's HTTPServer on its IOLoop, timers for latency."""

    from tornado import httputil
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from devtools.httpstub import BACKLOG, Request, Response

    class Exchange(httputil.HTTPMessageDelegate):
        def __init__(self, conn: Any) -> None:
            self.conn, self.chunks = conn, []

        def headers_received(self, start_line: Any, headers: Any) -> None:
            self.start, self.headers = start_line, headers

        def data_received(self, chunk: bytes) -> None:
            self.chunks.append(chunk)

        def finish(self) -> None:
            request = Request(
                self.start.method,
                self.start.path,
                {k.lower(): v for k, v in self.headers.items()},
                b"".join(self.chunks),
            )
            with outer._lock:
                outer.requests.append(request)
            response = outer.handler(request)
            if response.delay:
                asyncio.get_running_loop().call_later(response.delay, self.respond, response)
            else:
                self.respond(response)

        def respond(self, response: Response) -> None:
            body, content_type = response.encoded()
            headers = httputil.HTTPHeaders({"Content-Type": content_type, **response.headers})
            headers["Content-Length"] = str(len(body))
            start = httputil.ResponseStartLine("HTTP/1.1", response.status, "OK")
            self.conn.write_headers(start, headers, body)
            self.conn.finish()

    class Delegate(httputil.HTTPServerConnectionDelegate):
        def start_request(self, server_conn: Any, request_conn: Any) -> Exchange:
            return Exchange(request_conn)

    class Tornado:
        def __init__(self) -> None:
            self.handler = handler
            self.requests: list[Request] = []
            self._lock = threading.Lock()
            self.sockets = bind_sockets(port, host, backlog=BACKLOG)

        @property
        def url(self) -> str:
            host, port = self.sockets[0].getsockname()[:2]
            return f"http://{host}:{port}"

        def serve_forever(self) -> None:
            async def main() -> None:
                HTTPServer(Delegate()).add_sockets(self.sockets)
                await asyncio.Event().wait()

            asyncio.run(main())

    outer = Tornado()
    return outer


def serve(impl: str, latency: float) -> None:
    """Subprocess side: run the stand-in, print its URL, serve until SIGTERM."""
    from devtools.httpstub import RecordingServer
    from devtools.supplier_stub import StubBehaviour, SupplierStub

    stub = SupplierStub(StubBehaviour(latency=latency))
    if impl != "uvloop":
        stub.server.stop()
        stub.server = {
            "threaded": threaded_server,
            "tornado": tornado_server,
            "asyncio": partial(RecordingServer, event_loop=asyncio.new_event_loop),
        }[impl](stub.handle)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(stub.server.url, flush=True)
    stub.server.serve_forever()


# -- the load generator ---------------------------------------------------------------------


@dataclass
class Stats:
    impl: str
    connections: int
    ideal: float
    rate: float
    p50: float
    p99: float
    errors: int
    server_cpu: float
    client_cpu: float
    window: float


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], share: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


def hammer(
    url: str, server_pid: int, connections: int, duration: float, warmup: float, skus: list[str]
) -> tuple[list[float], int, float, float, float]:
    """N kept-alive HTTP/1.1 connections in a loop; latencies completed inside the window."""
    import gevent
    from gevent import socket

    host, port = url.removeprefix("http://").rsplit(":", 1)
    started = time.perf_counter()
    window_start, window_end = started + warmup, started + warmup + duration
    latencies: list[float] = []
    errors = 0
    cpu: dict[str, float] = {}

    def client(index: int) -> None:
        nonlocal errors
        n = index
        sock: Any = None
        buf = b""
        while time.perf_counter() < window_end:
            try:
                if sock is None:
                    sock = socket.create_connection((host, int(port)))
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buf = b""
                sku = skus[n % len(skus)]
                n += connections
                sent = time.perf_counter()
                sock.sendall(f"GET /products/{sku} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("server closed the connection")
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("server closed the connection")
                    buf += chunk
                buf = buf[length:]
                done = time.perf_counter()
                if head[9:12] != b"200":
                    errors += 1
                elif window_start <= sent and done <= window_end:
                    latencies.append(done - sent)
            except OSError:
                errors += 1
                if sock is not None:
                    sock.close()
                sock = None
                gevent.sleep(0.01)
        if sock is not None:
            sock.close()

    def sample_cpu() -> None:
        gevent.sleep(max(0.0, window_start - time.perf_counter()))
        cpu["server"], cpu["client"] = cpu_seconds(server_pid), time.process_time()
        gevent.sleep(max(0.0, window_end - time.perf_counter()))
        cpu["server"] = cpu_seconds(server_pid) - cpu["server"]
        cpu["client"] = time.process_time() - cpu["client"]

    greenlets = [gevent.spawn(client, i) for i in range(connections)]
    greenlets.append(gevent.spawn(sample_cpu))
    gevent.joinall(greenlets)
    return latencies, errors, cpu["server"], cpu["client"], duration


def measure(impl: str, args: argparse.Namespace) -> list[Stats]:
    latency = args.latency_ms / 1000
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", impl, "--latency-ms", str(args.latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url:
            raise SystemExit(f"the {impl} stand-in did not start")
        skus = [f"DEMO-{i:05d}" for i in range(1, 201)]
        results = []
        for connections in args.connections:
            print(f"   {impl}: {connections} connections for {args.duration:g} s ...", flush=True)
            lat, errors, server_cpu, client_cpu, window = hammer(
                url, proc.pid, connections, args.duration, args.warmup, skus
            )
            lat.sort()
            results.append(
                Stats(
                    impl=impl,
                    connections=connections,
                    ideal=connections / latency if latency else float("inf"),
                    rate=len(lat) / window,
                    p50=percentile(lat, 0.50),
                    p99=percentile(lat, 0.99),
                    errors=errors,
                    server_cpu=server_cpu,
                    client_cpu=client_cpu,
                    window=window,
                )
            )
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def table(results: list[Stats], latency_ms: float) -> str:
    lines = [
        "| Stand-in | Connections | Ideal req/s | req/s | of ideal | p50 ms | p99 ms | Errors "
        "| Server CPU s | Server CPU ms / 1k req | Client CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        per_k = 1000 * r.server_cpu / (r.rate * r.window) * 1000 if r.rate else float("nan")
        bounded = r.ideal != float("inf")  # no latency: no bound but the CPU
        ideal, share = (f"{r.ideal:,.0f}", f"{r.rate / r.ideal:.0%}") if bounded else ("-", "-")
        lines.append(
            f"| {r.impl} | {r.connections} | {ideal} | {r.rate:,.0f} "
            f"| {share} | {r.p50 * 1000:,.1f} | {r.p99 * 1000:,.1f} "
            f"| {r.errors} | {r.server_cpu:.2f} | {per_k:.0f} | {r.client_cpu:.2f} |"
        )
    by = {(r.impl, r.connections): r for r in results}
    ratios = [
        f"{c} connections: uvloop / threaded req/s "
        f"{by['uvloop', c].rate / by['threaded', c].rate:.1f}x"
        for c in sorted({r.connections for r in results})
        if ("uvloop", c) in by and ("threaded", c) in by and by["threaded", c].rate
    ]
    note = f"GET /products/<sku> at {latency_ms:g} ms latency; ideal = connections / latency."
    return "\n".join([*lines, "", note, *ratios])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--connections", type=int, nargs="+", default=[50, 400])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not measured")
    parser.add_argument("--impl", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS))
    parser.add_argument("--serve", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.serve:
        serve(args.serve, args.latency_ms / 1000)
        return 0
    print(
        f"Stand-in benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    results = [r for impl in args.impl for r in measure(impl, args)]
    print()
    print(table(results, args.latency_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
