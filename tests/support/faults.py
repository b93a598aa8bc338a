"""Real faults on real services: the reconciler as the process it is in production, a test
process pointed at another broker. (A Redis to stop and restart: devtools.redis_server.)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.fleet import BASE_DIR
from devtools.redis_server import PrivateRedis, free_port

__all__ = ["PrivateRedis", "Reconciler", "free_port", "nodes_on_private_broker", "publishing_to"]


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
