"""A redis-server of our own on a free port: for faults that would disturb others (stop it,
restart it empty, make it evict) and for benchmarks that must never touch a shared Redis.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import redis

from core.waiting import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of our own on a free port, nothing persisted: ours to stop and restart."""

    def __init__(self, workdir: Path, *args: str) -> None:
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.args = args  # extra redis-server options, e.g. "--appendonly", "yes"
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                *self.args]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, timeout=10, what=f"redis-server on :{self.port}")

    def stop(self) -> None:
        """Gone, as a crashed or restarting server: connections refused until start()."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False
