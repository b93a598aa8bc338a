"""Real faults on real services: the reconciler as the process it is in production, a test
process pointed at another broker, a database that hangs or goes away behind a TCP proxy.
(A Redis to stop and restart: devtools.redis_server.)
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.fleet import BASE_DIR
from devtools.redis_server import PrivateRedis, free_port

__all__ = [
    "DatabaseProxy", "PrivateRedis", "Reconciler", "free_port", "nodes_on_private_broker",
    "publishing_to",
]  # fmt: skip


class Reconciler:
    """`manage.py reconcile_runs --loop`, as the Procfile runs it, with a short stall time."""

    def __init__(self, env: dict[str, str], log: Path, *, stall: int = 3, every: float = 1) -> None:
        self.env = {**env, "RUN_STALL_AFTER": str(stall)}
        self.every = every
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Reconciler:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "reconcile_runs", "--loop", str(self.every)],
                cwd=BASE_DIR, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def publishing_to(app: Any, url: str) -> Iterator[None]:
    """Make this process talk to the broker at `url`, as a process configured with it would.

    Celery reads CELERY_BROKER_URL from the environment before its settings, so that is
    what changes here; the app picks the pools for the URL on the way in and out.
    """

    def reset() -> None:
        # Forget the pools (kombu keeps one per URL in its registry; never close those).
        app._pool = None
        app.amqp._producer_pool = None

    old = os.environ.get("CELERY_BROKER_URL")
    os.environ["CELERY_BROKER_URL"] = url
    reset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = old
        reset()


@contextlib.contextmanager
def nodes_on_private_broker(
    fleet: Any, tmp: Path, pools: tuple[str, ...], name: str, **env: str
) -> Iterator[PrivateRedis]:
    """These pools' nodes on a Redis of their own, to stop and start empty at will; the
    server's `fleet` is theirs (`env` adds to the session fleet's environment)."""
    from core.fleet import WorkerFleet
    from proj import topology

    server = PrivateRedis(tmp)
    nodes = WorkerFleet(
        fleet.app, {**fleet.env, "CELERY_BROKER_URL": server.url, **env},
        fleet.log_dir / name, f"pytest-{name}",
    )  # fmt: skip
    server.fleet = nodes  # type: ignore[attr-defined]
    try:
        server.start()
        with publishing_to(fleet.app, server.url):
            nodes.start(tuple(p for p in topology.POOLS if p.name in pools))
        yield server
    finally:
        if server.proc is None:
            server.start()  # let the nodes reconnect, so they stop cleanly
        nodes.stop()
        server.stop()


class DatabaseProxy:
    """A TCP proxy in front of the database, failing it on demand.

    `mode`: "forward" passes connections through; "hang" accepts them and never answers (a
    hung host); "refuse" closes them at once (the database is down). `drop()` closes every
    connection it carries, as a restart or failover does. `url(settings_dict)` is the
    DATABASE_URL of the same database through the proxy.
    """

    def __init__(self, target: tuple[str, int], mode: str = "forward") -> None:
        self.target = target
        self.mode = mode
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, settings_dict: dict[str, Any]) -> str:
        from core.fleet import database_url

        return database_url({**settings_dict, "HOST": "127.0.0.1", "PORT": str(self.port)})

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:  # drop() either sees this connection or it sees "refuse"
                mode = self.mode
                if mode != "refuse":
                    self._open.add(client)
            if mode == "refuse":
                client.close()
                continue
            if mode == "hang":
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                self._close(client)  # the database is down: the client sees a closed socket
                continue
            self._keep(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _close(self, sock: socket.socket) -> None:
        """shutdown() first: close() alone wakes no thread blocked in accept or recv."""
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(src)
            self._close(dst)

    def drop(self) -> None:
        """Close every connection carried now (set `mode` first to refuse the next ones)."""
        with self._lock:
            carried = list(self._open)
        for sock in carried:
            self._close(sock)

    def close(self) -> None:
        self.mode = "refuse"
        self._close(self.listener)
        self.drop()
