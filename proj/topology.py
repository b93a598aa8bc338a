"""The one declaration of queues, task routes and worker pools.

Settings, the `workers` command (celery multi), the Procfile, the system checks and the
tests all read these facts, so they cannot drift apart. This module imports nothing from
Django (or Celery): it must load in `celery multi`, in settings and in plain scripts alike.

Adding a queue: declare it in QUEUES, route tasks to it in ROUTES, and add it to a pool in
POOLS. Adding a report type: drop a module in `reports/types/`; its queue `reports.<module>`
and its pool follow from the file name (see `report_identifiers`).
"""

from __future__ import annotations

import pkgutil
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_QUEUE = "default"
REFRESH_QUEUE = "shop.refresh"
CALLBACKS_QUEUE = "shop.callbacks"
REPORT_QUEUE_PREFIX = "reports."
REPORT_TYPES_DIR = Path(__file__).resolve().parent.parent / "reports" / "types"


@dataclass(frozen=True)
class Queue:
    name: str
    purpose: str


@dataclass(frozen=True)
class Pool:
    """One worker node: `celery multi` starts it as `<name>@<host>`."""

    name: str
    queues: tuple[str, ...]
    concurrency: int
    # gevent for I/O-bound work; "prefork" only where the work is CPU-bound.
    pool: str = "gevent"
    purpose: str = ""


def report_identifiers() -> tuple[str, ...]:
    """Report types are the modules of reports/types/, found without importing Django."""
    found = pkgutil.iter_modules([str(REPORT_TYPES_DIR)])
    return tuple(sorted(m.name for m in found if not m.name.startswith("_")))


def report_queue(identifier: str) -> str:
    return f"{REPORT_QUEUE_PREFIX}{identifier}"


QUEUES: tuple[Queue, ...] = (
    Queue(DEFAULT_QUEUE, "anything without a route: health pings, small chores"),
    Queue(REFRESH_QUEUE, "supplier refresh chunks: many slow HTTP calls"),
    Queue(CALLBACKS_QUEUE, "workflow callbacks: short, must never wait behind refresh work"),
    *(Queue(report_queue(i), f"the {i} report") for i in report_identifiers()),
)

# Task name -> queue. Report tasks are generic and routed by their `report_type` keyword
# argument instead (see `route_report`), so each type lands on its own queue.
ROUTES: dict[str, str] = {
    "core.tasks.ping": DEFAULT_QUEUE,
    "shop.tasks.product_refresh_chunk": REFRESH_QUEUE,
    "shop.tasks.refresh_run_finish": CALLBACKS_QUEUE,
    "shop.tasks.refresh_run_abort": CALLBACKS_QUEUE,
}

POOLS: tuple[Pool, ...] = (
    Pool(
        "refresh",
        (REFRESH_QUEUE,),
        concurrency=40,
        purpose="I/O-bound supplier calls; each task also fans out HTTP requests",
    ),
    Pool(
        "callbacks",
        (CALLBACKS_QUEUE, DEFAULT_QUEUE),
        concurrency=20,
        purpose="its own node, so callbacks never queue behind refresh chunks",
    ),
    *(
        Pool(
            f"reports_{i}",
            (report_queue(i),),
            concurrency=2,
            pool="prefork",
            purpose=f"the {i} report: CPU-bound rendering, one node per type",
        )
        for i in report_identifiers()
    ),
)


def route_report(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
) -> dict[str, str] | None:
    """Celery router: a task called with `report_type=<id>` goes to that type's queue."""
    if isinstance(kwargs, dict) and name.startswith("reports.tasks."):
        identifier = kwargs.get("report_type")
        if identifier:
            return {"queue": report_queue(identifier)}
    return None


def routed_queues() -> dict[str, str]:
    """Every route as `pattern -> queue`, report routes included, for checks and docs."""
    routes = dict(ROUTES)
    for identifier in report_identifiers():
        routes[f"reports.tasks.* (report_type={identifier})"] = report_queue(identifier)
    return routes


# Operators expect -O fair; it only changes how prefork hands out tasks. Under gevent,
# the prefetch settings (see settings.py) keep short tasks from waiting behind long ones.
FAIR = ["-O", "fair"]


def worker_options(pool: Pool) -> list[str]:
    """The per-node `celery worker` options that make a node consume `pool` as intended."""
    return ["-Q", ",".join(pool.queues), "-P", pool.pool, "-c", str(pool.concurrency)]


def procfile_worker_line(pool: Pool) -> str:
    """A foreground worker for the Procfile (celery multi detaches, so it cannot be used)."""
    argv = ["celery", "-A", "proj", "worker", "-n", f"{pool.name}@%h", "-l", "INFO"]
    return f"worker_{pool.name}: {shlex.join(argv + worker_options(pool) + FAIR)}"


def procfile_text() -> str:
    """The whole Procfile; `manage.py workers procfile` prints it, a test compares."""
    lines = [
        "# Generated from proj/topology.py by `python manage.py workers procfile`; a test",
        "# fails when they disagree. Production starts workers with `manage.py workers`.",
        "release: python manage.py migrate --noinput",
        "web: gunicorn proj.wsgi --bind ${WEB_BIND:-127.0.0.1:8000} --access-logfile -",
        "flower: python manage.py flower",
        *(procfile_worker_line(p) for p in POOLS),
    ]
    return "\n".join(lines) + "\n"


def multi_argv(action: str, var_dir: Path, pools: tuple[Pool, ...] = POOLS) -> list[str]:
    """`celery multi <action>` for every pool: one node per pool, pid and logs under var/."""
    argv = ["celery", "multi", action, *(p.name for p in pools), "-A", "proj"]
    argv += [f"--pidfile={var_dir}/run/%n.pid", f"--logfile={var_dir}/log/%n%I.log"]
    if action in ("stop", "stopwait", "kill"):
        return argv
    argv += ["-l", "INFO", *FAIR]
    for p in pools:
        options = worker_options(p)
        for flag, value in zip(options[::2], options[1::2], strict=True):
            argv += [f"{flag}:{p.name}", value]
    return argv
