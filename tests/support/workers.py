"""The real worker fleet for tests: one `celery worker` subprocess per topology pool.

Subprocesses, not an in-process worker thread: gevent must monkey-patch a process before
anything else loads, which cannot happen inside pytest, and a subprocess runs exactly the
command line the Procfile runs (same queues, pool and concurrency), against the test
database and the test Redis database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proj import topology
from tests.support.waiting import wait_for

BASE_DIR = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).parent / "celery")
HOSTNAME = "pytest"


def database_url(settings_dict: dict[str, Any]) -> str:
    """The URL of the database the test process is connected to (the test database)."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


class WorkerFleet:
    def __init__(
        self, app: Any, env: dict[str, str], log_dir: Path, hostname: str = HOSTNAME
    ) -> None:
        self.app = app
        self.hostname = hostname
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def node(self, pool: topology.Pool) -> str:
        return f"{pool.name}@{self.hostname}"

    def log_path(self, pool_name: str) -> Path:
        return self.log_dir / f"{pool_name}.log"

    def start(
        self, pools: tuple[topology.Pool, ...] = topology.POOLS, extra_args: Sequence[str] = ()
    ) -> None:
        """Start `pools` as the Procfile does, plus `extra_args` (benchmarks' overrides)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for pool in pools:
            argv = [CELERY, "-A", "proj", "worker", "-n", self.node(pool), "-l", "INFO"]
            argv += [*topology.worker_options(pool), *topology.FAIR, *extra_args]
            with open(self.log_path(pool.name), "ab") as log:
                # Own session: a Ctrl-C reaches only the parent, which stops them in order.
                self.procs[pool.name] = subprocess.Popen(
                    argv, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        expected = {self.node(p) for p in pools}

        def all_answer() -> bool:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    log = self.log_path(name).read_text()[-3000:]
                    raise RuntimeError(f"worker {name} exited ({proc.returncode}):\n{log}")
            replies = self.app.control.ping(destination=sorted(expected), timeout=0.5)
            return expected <= {name for reply in replies for name in reply}

        try:
            wait_for(all_answer, timeout=60, interval=0.2, what=f"workers {sorted(expected)}")
        except BaseException:
            self.stop()  # no orphan workers left behind to answer the next run
            raise

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def worker_env(db_settings: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["DATABASE_URL"] = database_url(db_settings)
    return env
