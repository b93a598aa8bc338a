"""Run the worker fleet: `celery multi` (detached), or a pool in the foreground (Procfile)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from kombu.exceptions import OperationalError

from proj import topology

ACTIONS = {"start": "start", "stop": "stopwait", "restart": "restart"}
# LSB `status` exit codes, so init scripts and monitors can act on them.
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN = 4


def celery_executable() -> str:
    """The celery script of the running interpreter, so a virtualenv's is used."""
    candidate = Path(sys.executable).parent / "celery"
    return str(candidate) if candidate.exists() else "celery"


def pid_file(var_dir: Path, node: str) -> Path:
    """Where `celery multi` keeps a node's pid (`--pidfile=<var>/run/%n.pid`)."""
    return var_dir / "run" / f"{node}.pid"


def log_file(var_dir: Path, node: str) -> Path:
    """A node's main log file (`--logfile=<var>/log/%n%I.log`; %I is empty for it)."""
    return var_dir / "log" / f"{node}.log"


def log_files(var_dir: Path, node: str) -> list[Path]:
    """The node's log files that exist: its own, then one per prefork pool process (-N)."""
    own = re.compile(rf"{re.escape(node)}(-(\d+))?\.log")
    found = []
    for path in (var_dir / "log").glob(f"{node}*.log"):
        match = own.fullmatch(path.name)
        if match:
            found.append((int(match.group(2) or 0), path))
    return [path for _, path in sorted(found)]


def node_pid(var_dir: Path, node: str) -> int | None:
    """The pid of a running node, from its pid file; None when it does not run."""
    try:
        pid = int(pid_file(var_dir, node).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def node_name(node: str) -> str:
    """A node on this host: `celery multi` and the Procfile both name it <node>@%h."""
    return f"{node}@{socket.gethostname()}"


def answering(nodes: list[str], timeout: float) -> set[str]:
    """The nodes on this host that answer a broadcast ping; raises when no broker."""
    from proj.celery import app

    names = {node_name(n): n for n in nodes}
    replies = app.control.ping(destination=sorted(names), timeout=timeout)
    return {names[full] for reply in replies for full in reply if full in names}


def run_foreground(pool: topology.Pool) -> int:
    """Every node of `pool` in the foreground (the Procfile's worker lines); their exit code.

    One node: exec `celery worker` itself. Several: start them, pass SIGTERM/SIGINT on (a
    warm shutdown for each), and if one exits, stop the others, so the process manager
    restarts the pool as a whole.
    """
    argvs = [topology.node_argv(pool, node, celery_executable()) for node in pool.nodes]
    if len(argvs) == 1:
        os.execvp(argvs[0][0], argvs[0])
    children = [subprocess.Popen(argv) for argv in argvs]
    stopping = False

    def forward(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    if not stopping:
        forward(signal.SIGTERM, None)
    return max(abs(child.wait()) for child in children)


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a file, read from its end (logs grow large)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = position = f.tell()
        data = b""
        while position > 0 and data.count(b"\n") <= lines:
            position = max(0, position - 8192)
            f.seek(position)
            data = f.read(end - position)
    return data.decode("utf-8", errors="replace").splitlines()[-lines:] if lines else []


class Command(BaseCommand):
    help = (
        "start | stop | restart | status | logs | show | procfile | run POOL: the Celery "
        "worker nodes of proj/topology/ (one per CPU for I/O pools), through celery multi "
        "(gevent pools, -O fair). stop is a warm shutdown: it waits for running tasks to "
        "finish. status asks each node for a ping as well as reading its pid file, so nodes "
        "started by the Procfile show too; it exits 3 when a node is down. run POOL runs "
        "the pool's nodes in the foreground (the Procfile's worker lines)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "action", choices=[*ACTIONS, "status", "logs", "show", "procfile", "run"]
        )
        parser.add_argument("run_pool", nargs="?", metavar="POOL", help="run: the pool.")
        parser.add_argument(
            "--pool",
            action="append",
            choices=[p.name for p in topology.POOLS],
            help="Only this pool (repeatable). Default: every pool.",
        )
        parser.add_argument(
            "--var-dir",
            type=Path,
            default=settings.VAR_DIR,
            help="Where run/<node>.pid and log/<node>.log go (default: %(default)s).",
        )
        parser.add_argument(
            "-n",
            "--lines",
            type=int,
            default=20,
            help="logs: how many of the last lines of each log file (default: %(default)s).",
        )
        parser.add_argument(
            "--ping-timeout",
            type=float,
            default=1.0,
            help="status: seconds to wait for the nodes' ping replies (default: %(default)s).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action: str = options["action"]
        if action == "run":
            pool = next((p for p in topology.POOLS if p.name == options["run_pool"]), None)
            if pool is None:
                known = ", ".join(p.name for p in topology.POOLS)
                raise CommandError(f"run needs a pool: one of {known}.")
            raise SystemExit(run_foreground(pool))
        names = options["pool"] or [p.name for p in topology.POOLS]
        pools = tuple(p for p in topology.POOLS if p.name in names)
        var_dir: Path = options["var_dir"].resolve()

        if action == "status":
            self.status(pools, var_dir, options["ping_timeout"])
            return
        if action == "logs":
            self.logs(pools, var_dir, options["lines"])
            return
        if action == "procfile":
            self.stdout.write(topology.procfile_text(), ending="")
            return
        multi = topology.multi_argv(ACTIONS.get(action, "start"), var_dir, pools)
        argv = [celery_executable(), *multi[1:]]
        if action == "show":
            self.stdout.write(shlex.join(argv))
            return
        (var_dir / "run").mkdir(parents=True, exist_ok=True)
        (var_dir / "log").mkdir(parents=True, exist_ok=True)
        if action == "stop":
            self.stdout.write(
                "Stopping " + ", ".join(n for p in pools for n in p.nodes) + ": warm shutdown, "
                "waiting for running tasks to finish (send `workers stop` again or kill -9 to "
                "force)."
            )
        result = subprocess.run(argv, cwd=settings.BASE_DIR, check=False)
        if result.returncode != 0:
            raise CommandError(
                f"celery multi {action} failed (exit {result.returncode}); see {var_dir}/log"
            )
        if action == "stop":
            self.stdout.write(self.style.SUCCESS("All tasks finished; nodes stopped."))
            return
        self.wait_until_up(pools, var_dir)
        self.status(pools, var_dir, options["ping_timeout"])

    def wait_until_up(self, pools: tuple[topology.Pool, ...], var_dir: Path) -> None:
        """Detached nodes write their pid file, then answer pings, a while after multi."""
        deadline = time.monotonic() + 30
        pending = {n for p in pools for n in p.nodes}
        while pending and time.monotonic() < deadline:
            started = [n for n in pending if node_pid(var_dir, n)]
            try:
                up = answering(started, timeout=0.5) if started else set()
            except OperationalError:
                return  # status says the broker is unreachable
            pending -= up
            if pending:
                time.sleep(0.2)

    def status(self, pools: tuple[topology.Pool, ...], var_dir: Path, timeout: float) -> None:
        nodes = [(pool, node) for pool in pools for node in pool.nodes]
        try:
            pinged: set[str] | None = answering([n for _, n in nodes], timeout)
        except OperationalError as exc:
            pinged = None
            self.stdout.write(
                self.style.WARNING(f"The broker does not answer ({exc}): pid files only.")
            )
        down = unknown = 0
        for pool, node in nodes:
            pid = node_pid(var_dir, node)
            what = f"{pool.pool} x{pool.concurrency}, queues {','.join(pool.queues)}"
            log = f"log {log_file(var_dir, node)}"
            if pool.pool == "prefork":
                log += f" (+ {node}-N.log per pool process)"
            answers = pinged is not None and node in pinged
            if pid and (answers or pinged is None):
                self.stdout.write(f"{node}: running (pid {pid}, celery multi); {what}; {log}")
            elif pid:
                self.stdout.write(
                    self.style.WARNING(
                        f"{node}: running (pid {pid}, celery multi) but not answering "
                        f"ping as {node_name(node)}: starting, busy or cut off from the "
                        f"broker; {what}; {log}"
                    )
                )
            elif answers:
                self.stdout.write(
                    f"{node}: running (answers ping as {node_name(node)}; not started by "
                    f"celery multi, its log is wherever its supervisor sends it); {what}"
                )
            elif pinged is None:
                unknown += 1
                self.stdout.write(
                    self.style.WARNING(
                        f"{node}: unknown (no celery multi pid file, and no broker to "
                        f"ask {node_name(node)}); {what}"
                    )
                )
            else:
                down += 1
                stale = " (stale pid file)" if pid_file(var_dir, node).exists() else ""
                self.stdout.write(
                    self.style.WARNING(
                        f"{node}: not running{stale}, no answer to ping from "
                        f"{node_name(node)}; {what}; {log}"
                    )
                )
        if down:
            raise SystemExit(EXIT_NOT_RUNNING)
        if unknown:
            raise SystemExit(EXIT_UNKNOWN)

    def logs(self, pools: tuple[topology.Pool, ...], var_dir: Path, lines: int) -> None:
        if lines < 0:
            raise CommandError("-n/--lines must be 0 or more.")
        shown = 0
        for pool in pools:
            for node in pool.nodes:
                paths = log_files(var_dir, node)
                if not paths:
                    self.stdout.write(
                        self.style.WARNING(
                            f"{node}: no log file at {log_file(var_dir, node)} (nodes "
                            "started by `workers start` write there; Procfile nodes log to "
                            "their supervisor)."
                        )
                    )
                for path in paths:
                    shown += 1
                    self.stdout.write(f"==> {path} <==")
                    for line in tail(path, lines):
                        self.stdout.write(line)
        if not shown:
            raise CommandError(f"No node log file under {var_dir / 'log'}.")
