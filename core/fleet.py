"""A worker fleet in the foreground: one `celery worker` subprocess per topology pool.

Tests and benchmarks start it. Subprocesses, not an in-process worker thread: gevent must
monkey-patch a process before anything else loads, which cannot happen inside pytest, and
a subprocess runs exactly the command line the Procfile runs (same queues, pool and
concurrency), against whatever database and broker its environment names.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.waiting import wait_for
from proj import topology

BASE_DIR = Path(__file__).resolve().parents[1]
CELERY = str(Path(sys.executable).parent / "celery")
# Node names are <pool>@HOSTNAME; another checkout running its suite on this machine sets
# its own so the two fleets never answer each other's pings.
HOSTNAME = os.environ.get("SHOP_TEST_HOSTNAME", "pytest")
# A wait for idle workers longer than this is reported (as a warning in pytest's summary).
SLOW_IDLE = 5.0


def database_url(settings_dict: dict[str, Any]) -> str:
    """The URL of the database the test process is connected to (the test database)."""
    if "sqlite" in settings_dict["ENGINE"]:
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


class WorkerFleet:
    """Foreground nodes in subprocesses, one per node of each pool (`refresh1`, `refresh2`)."""

    def __init__(
        self, app: Any, env: dict[str, str], log_dir: Path, hostname: str = HOSTNAME
    ) -> None:
        self.app = app
        self.hostname = hostname
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # by node name (no @host)
        self.pools: tuple[topology.Pool, ...] = ()

    def pool(self, name: str) -> topology.Pool:
        return next(p for p in topology.POOLS if p.name == name)

    def nodes(self, pool: topology.Pool | str) -> list[str]:
        """Every node of a pool, as `name@host` (for control commands and inspect)."""
        pool = self.pool(pool) if isinstance(pool, str) else pool
        return [f"{node}@{self.hostname}" for node in pool.nodes]

    def node(self, pool: topology.Pool | str) -> str:
        """The node of a single-node pool (the first node of a bigger one)."""
        return self.nodes(pool)[0]

    def log_path(self, node: str) -> Path:
        return self.log_dir / f"{node}.log"

    def log_text(self, pool_name: str) -> str:
        """Every node's log of a pool, one after the other."""
        paths = (self.log_path(n) for n in self.pool(pool_name).nodes)
        return "".join(p.read_text() for p in paths if p.exists())

    def start(
        self,
        pools: tuple[topology.Pool, ...] = topology.POOLS,
        extra_args: Sequence[str] = (),
        *,
        wait: bool = True,
    ) -> None:
        """Start the nodes of `pools` not running yet, as the Procfile does, plus
        `extra_args` (benchmarks' overrides). With `wait`, return once every node answers
        a ping (and fail if one exits).
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pools = tuple(dict.fromkeys((*self.pools, *pools)))
        for pool in pools:
            for node in pool.nodes:
                if node in self.procs and self.procs[node].poll() is None:
                    continue
                argv = [*topology.node_argv(pool, node, CELERY), *extra_args]
                argv[argv.index("-n") + 1] = f"{node}@{self.hostname}"
                with open(self.log_path(node), "ab") as log:
                    # Own session: a Ctrl-C reaches only the parent, which stops them in order.
                    self.procs[node] = subprocess.Popen(
                        argv, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )  # fmt: skip
        if not wait:
            return
        expected = {name for p in pools for name in self.nodes(p)}

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

    def processes(self, pool_name: str) -> list[subprocess.Popen[bytes]]:
        return [self.procs[n] for n in self.pool(pool_name).nodes if n in self.procs]

    def kill(self, pool_name: str) -> None:
        """SIGKILL every node of a pool, as the OOM killer or a power cut would."""
        for node in self.pool(pool_name).nodes:
            proc = self.procs.pop(node)
            proc.kill()
            proc.wait()

    def restart(self, pool_name: str, extra_args: Sequence[str] = ()) -> None:
        """Start a pool's nodes again (what systemd, honcho or an operator does)."""
        self.start((self.pool(pool_name),), extra_args)

    def wait_idle(self, broker_url: str, timeout: float = 30.0) -> bool:
        """Wait until no queue its pools consume holds a message and no node runs a task.

        Tests call it before their database is emptied: a worker still finishing the
        previous test's work would otherwise write into the flush (on PostgreSQL, a
        deadlock with TRUNCATE).
        """
        import redis

        if not broker_url.startswith(("redis://", "rediss://")):
            return True
        client = redis.Redis.from_url(broker_url)
        # Only what these pools consume: a queue nobody here reads never empties (a bench
        # runs the fulfilment pools alone; their shipping emails stay queued).
        names = sorted({name for pool in self.pools for name in pool.queues})
        nodes = [n for p in self.pools for n in self.nodes(p)]
        started = time.monotonic()
        busy = ""
        try:
            while time.monotonic() < started + timeout:
                queued = {name: n for name in names if (n := client.llen(name))}
                if queued:
                    busy = f"queued {queued}"
                else:
                    inspect = self.app.control.inspect(destination=nodes, timeout=0.5)
                    replies = inspect.active() or {}
                    if not any(replies.values()):
                        return True
                    busy = "running " + "; ".join(
                        f"{node}: {', '.join(t.get('name', '?') for t in tasks)}"
                        for node, tasks in replies.items()
                        if tasks
                    )
                time.sleep(0.2)
            return False
        finally:
            waited = time.monotonic() - started
            if waited > SLOW_IDLE:  # a test left work behind: say what, once
                warnings.warn(
                    f"waited {waited:.1f} s for the workers to go idle; last seen: {busy}",
                    stacklevel=2,
                )

    def ensure_running(self) -> None:
        """Start again every node of the fleet that is not running (after a fault test)."""
        dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
        for name in dead:
            self.procs.pop(name)
        missing = tuple(p for p in self.pools if any(n not in self.procs for n in p.nodes))
        if missing:
            self.start(missing)

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
