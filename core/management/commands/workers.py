"""Run the worker fleet with `celery multi`: one node per pool of proj/topology.py."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from proj import topology

ACTIONS = {"start": "start", "stop": "stopwait", "restart": "restart"}


def celery_executable() -> str:
    """The celery script of the running interpreter, so a virtualenv's is used."""
    candidate = Path(sys.executable).parent / "celery"
    return str(candidate) if candidate.exists() else "celery"


def node_pid(var_dir: Path, pool: topology.Pool) -> int | None:
    """The pid of a running node, from its pid file; None when it does not run."""
    try:
        pid = int((var_dir / "run" / f"{pool.name}.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


class Command(BaseCommand):
    help = (
        "start | stop | restart | status | show | procfile: the Celery worker nodes, one "
        "per pool of proj/topology.py, through celery multi (gevent pools, -O fair). stop "
        "is a warm shutdown: it waits for running tasks to finish."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=[*ACTIONS, "status", "show", "procfile"])
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

    def handle(self, *args: Any, **options: Any) -> None:
        names = options["pool"] or [p.name for p in topology.POOLS]
        pools = tuple(p for p in topology.POOLS if p.name in names)
        var_dir: Path = options["var_dir"].resolve()
        action: str = options["action"]

        if action == "status":
            self.status(pools, var_dir)
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
                "Stopping " + ", ".join(p.name for p in pools) + ": warm shutdown, waiting "
                "for running tasks to finish (send `workers stop` again or kill -9 to force)."
            )
        result = subprocess.run(argv, cwd=settings.BASE_DIR, check=False)
        if result.returncode != 0:
            raise CommandError(
                f"celery multi {action} failed (exit {result.returncode}); see {var_dir}/log"
            )
        if action == "stop":
            self.stdout.write(self.style.SUCCESS("All tasks finished; nodes stopped."))
            return
        # Detached nodes write their pid files a moment after celery multi returns.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(node_pid(var_dir, p) for p in pools):
            time.sleep(0.2)
        self.status(pools, var_dir)

    def status(self, pools: tuple[topology.Pool, ...], var_dir: Path) -> None:
        down = 0
        for pool in pools:
            pid = node_pid(var_dir, pool)
            what = f"{pool.pool} x{pool.concurrency}, queues {','.join(pool.queues)}"
            if pid:
                self.stdout.write(f"{pool.name}: running (pid {pid}); {what}")
            else:
                down += 1
                self.stdout.write(self.style.WARNING(f"{pool.name}: not running; {what}"))
        if down:
            # LSB status convention: 3 = not running, so scripts and monitors can act on it.
            raise SystemExit(3)
