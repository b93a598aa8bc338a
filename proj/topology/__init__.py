"""The one declaration of queues, task routes and worker pools.

Settings, the `workers` command (celery multi), the Procfile, the system checks and the
tests all read these facts, so they cannot drift apart. This package imports nothing from
Django (or Celery): it must load in `celery multi`, in settings and in plain scripts alike.

Each domain declares its own in a module here (QUEUES, ROUTES, POOLS); this module
assembles them and derives everything else. Adding a queue: declare it in its domain's
QUEUES, route tasks to it in ROUTES, and add it to a pool in POOLS. Adding a report type:
drop a module in `reports/types/`; its queue and pool follow from the file name.
"""

from __future__ import annotations

from pathlib import Path

from proj.topology import core, fulfilment, imports, notifications, reports, shop
from proj.topology.base import Pool, Queue, QueueFamily, cpu_count
from proj.topology.core import DEFAULT_QUEUE
from proj.topology.notifications import BULK_QUEUE, NOTIFY_QUEUE
from proj.topology.reports import report_identifiers, report_queue, report_slots
from proj.topology.shop import CALLBACKS_QUEUE, REFRESH_QUEUE

__all__ = [
    "BULK_QUEUE",
    "CALLBACKS_QUEUE",
    "DEFAULT_QUEUE",
    "FAIR",
    "FAMILIES",
    "NOTIFY_QUEUE",
    "POOLS",
    "QUEUES",
    "REFRESH_QUEUE",
    "ROUTES",
    "Pool",
    "Queue",
    "QueueFamily",
    "cpu_count",
    "family_of",
    "multi_argv",
    "node_argv",
    "procfile_text",
    "report_identifiers",
    "report_queue",
    "report_slots",
    "routed_queues",
    "worker_options",
]

DOMAINS = (core, shop, reports, imports, notifications, fulfilment)

QUEUES: tuple[Queue, ...] = tuple(q for d in DOMAINS for q in d.QUEUES)
ROUTES: dict[str, str] = {name: queue for d in DOMAINS for name, queue in d.ROUTES.items()}
POOLS: tuple[Pool, ...] = tuple(p for d in DOMAINS for p in d.POOLS)
# Queues made at run time (per user, ...): known by name, consumed by their pool's nodes.
FAMILIES: tuple[QueueFamily, ...] = tuple(f for d in DOMAINS for f in getattr(d, "FAMILIES", ()))


def family_of(name: str, families: tuple[QueueFamily, ...] = FAMILIES) -> QueueFamily | None:
    """The family a queue name belongs to, if any."""
    return next((f for f in families if f.owns(name)), None)


def routed_queues() -> dict[str, str]:
    """Every route as `pattern -> queue`, report types included, for checks and docs."""
    routes = dict(ROUTES)
    for identifier in report_identifiers():
        routes[f"reports.tasks.* (type {identifier})"] = report_queue(identifier)
    return routes


# Operators expect -O fair; it only changes how prefork hands out tasks. Under gevent,
# the prefetch settings (see settings.py) keep short tasks from waiting behind long ones.
FAIR = ["-O", "fair"]


def worker_options(pool: Pool) -> list[str]:
    """The per-node `celery worker` options that make a node consume `pool` as intended."""
    options = ["-Q", ",".join(pool.queues), "-P", pool.pool, "-c", str(pool.concurrency)]
    if pool.max_tasks_per_child:
        options += ["--max-tasks-per-child", str(pool.max_tasks_per_child)]
    if pool.max_memory_per_child:
        options += ["--max-memory-per-child", str(pool.max_memory_per_child)]
    return options


def node_argv(pool: Pool, node: str, celery: str = "celery") -> list[str]:
    """One foreground node of `pool`, as the Procfile, tests and benchmarks start it."""
    argv = [celery, "-A", "proj", "worker", "-n", f"{node}@%h", "-l", "INFO"]
    return argv + worker_options(pool) + FAIR


def procfile_text() -> str:
    """The whole Procfile; `manage.py workers procfile` prints it, a test compares.

    A pool's line runs `manage.py workers run <pool>`: every node of the pool in the
    foreground, as many as the host has CPUs for an I/O pool, decided on that host.
    """
    lines = [
        "# Generated from proj/topology/ by `python manage.py workers procfile`; a test",
        "# fails when they disagree. Production starts workers with `manage.py workers`.",
        "release: python manage.py migrate --noinput && python manage.py collectstatic --noinput",
        "web: gunicorn proj.wsgi --bind ${WEB_BIND:-127.0.0.1:8000} --access-logfile -",
        "flower: python manage.py flower",
        "reconciler: python manage.py reconcile_runs --loop",
        *(f"worker_{p.name}: python manage.py workers run {p.name}" for p in POOLS),
    ]
    return "\n".join(lines) + "\n"


def multi_argv(action: str, var_dir: Path, pools: tuple[Pool, ...] = POOLS) -> list[str]:
    """`celery multi <action>` for every node of `pools`, pid and logs under var/."""
    nodes = [node for p in pools for node in p.nodes]
    argv = ["celery", "multi", action, *nodes, "-A", "proj"]
    argv += [f"--pidfile={var_dir}/run/%n.pid", f"--logfile={var_dir}/log/%n%I.log"]
    if action in ("stop", "stopwait", "kill"):
        return argv
    argv += ["-l", "INFO", *FAIR]
    for p in pools:
        options = worker_options(p)
        for node in p.nodes:
            for flag, value in zip(options[::2], options[1::2], strict=True):
                argv += [f"{flag}:{node}", value]
    return argv
