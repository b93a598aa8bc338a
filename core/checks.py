"""System checks that keep settings, routes and worker pools consistent with each other.

They read the live settings (CELERY_TASK_QUEUES, CELERY_TASK_ROUTES, WORKER_POOLS), so a
hand-edited setting that drifts from proj/topology.py is caught by `manage.py check`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core import checks

SERIALIZER_SETTINGS = (
    "CELERY_TASK_SERIALIZER",
    "CELERY_RESULT_SERIALIZER",
    "CELERY_EVENT_SERIALIZER",
)
CONTENT_SETTINGS = ("CELERY_ACCEPT_CONTENT", "CELERY_RESULT_ACCEPT_CONTENT")
HOW_TO_FIX = "Fix it in proj/topology.py; settings, Procfile and workers derive from it."


def _route_targets(routes: Any) -> dict[str, str]:
    """Static routes (dicts) as pattern -> queue."""
    targets: dict[str, str] = {}
    for entry in routes if isinstance(routes, list | tuple) else [routes]:
        if isinstance(entry, dict):
            for pattern, target in entry.items():
                queue = target.get("queue") if isinstance(target, dict) else target
                targets[pattern] = str(queue)
    return targets


def _queue_names(queues: Iterable[Any]) -> set[str]:
    return {getattr(q, "name", q) for q in queues or ()}


class _Known(set):
    """Queue names, plus every member of the queue families given (`imports.user.<id>`)."""

    def __init__(self, names: Iterable[str], families: Iterable[Any]) -> None:
        super().__init__(names)
        self.families = tuple(families)

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or any(f.owns(name) for f in self.families)


@checks.register("celery")
def check_topology(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    families = getattr(settings, "QUEUE_FAMILIES", ())
    pools = getattr(settings, "WORKER_POOLS", ())
    pool_names = {pool.name for pool in pools}
    declared = _Known(_queue_names(getattr(settings, "CELERY_TASK_QUEUES", ())), families)
    # A family's members are consumed by its pool's nodes (told at run time), if it runs.
    consumed = _Known(
        {q for pool in pools for q in pool.queues}, [f for f in families if f.pool in pool_names]
    )
    for family in families:
        if family.pool not in pool_names:
            errors.append(
                checks.Error(
                    f"Queue family {family.prefix!r}* is consumed by pool {family.pool!r}, "
                    "which is not a worker pool: its queues would never be consumed.",
                    hint=f"Name an existing pool in the QueueFamily, or add {family.pool!r} "
                    f"to POOLS. {HOW_TO_FIX}",
                    id="core.E006",
                )
            )

    for pattern, queue in sorted(_route_targets(settings.CELERY_TASK_ROUTES).items()):
        if queue not in consumed:
            errors.append(
                checks.Error(
                    f"Route {pattern!r} sends tasks to queue {queue!r}, which no worker pool "
                    "consumes: those tasks would wait for ever.",
                    hint=f"Add {queue!r} to a Pool's queues in POOLS. {HOW_TO_FIX}",
                    id="core.E001",
                )
            )
        if queue not in declared:
            errors.append(
                checks.Error(
                    f"Route {pattern!r} sends tasks to undeclared queue {queue!r}.",
                    hint=f"Declare {queue!r} in QUEUES or fix the route. {HOW_TO_FIX}",
                    id="core.E002",
                )
            )
    for pool in pools:
        for queue in pool.queues:
            if queue not in declared:
                errors.append(
                    checks.Error(
                        f"Worker pool {pool.name!r} consumes undeclared queue {queue!r}.",
                        hint=f"Declare {queue!r} in QUEUES or remove it from the pool. "
                        + HOW_TO_FIX,
                        id="core.E003",
                    )
                )
    default = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")
    if default not in consumed:
        errors.append(
            checks.Error(
                f"The default queue {default!r} is not consumed by any worker pool.",
                hint=f"Add {default!r} to a Pool's queues. {HOW_TO_FIX}",
                id="core.E004",
            )
        )
    if getattr(settings, "CELERY_TASK_CREATE_MISSING_QUEUES", True):
        errors.append(
            checks.Error(
                "CELERY_TASK_CREATE_MISSING_QUEUES is on: a misspelt queue would be created "
                "silently and its tasks never run.",
                hint="Set CELERY_TASK_CREATE_MISSING_QUEUES = False in proj/settings.py.",
                id="core.E005",
            )
        )
    return errors


@checks.register("celery", checks.Tags.security)
def check_serializers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for name in SERIALIZER_SETTINGS:
        value = getattr(settings, name, None)
        if value != "json":
            errors.append(
                checks.Error(
                    f"{name} is {value!r}; only 'json' is allowed. Pickle and friends let "
                    "anyone who can write to the broker run code in the worker.",
                    hint=f"Set {name} = 'json' and pass model ids, not objects, to tasks.",
                    id="core.E010",
                )
            )
    for name in CONTENT_SETTINGS:
        value = list(getattr(settings, name, None) or [])
        if value not in (["json"], ["application/json"]):
            errors.append(
                checks.Error(
                    f"{name} is {value!r}; workers must accept JSON only.",
                    hint=f"Set {name} = ['json'].",
                    id="core.E011",
                )
            )
    return errors


@checks.register("celery")
def check_delivery_timing(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Redis must not redeliver a task that is still running or waiting for its countdown."""
    from core.broker import redis_broker

    if not redis_broker(settings.CELERY_BROKER_URL):
        return []
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    needed = settings.CELERY_TASK_TIME_LIMIT + settings.CELERY_MAX_COUNTDOWN
    if visibility > needed:
        return []
    return [
        checks.Error(
            f"The Redis visibility timeout ({visibility} s) is not longer than the task time "
            f"limit plus the longest retry countdown ({settings.CELERY_TASK_TIME_LIMIT} + "
            f"{settings.CELERY_MAX_COUNTDOWN} s): a slow or delayed task would be delivered "
            "a second time while it is still running or waiting.",
            hint="Raise CELERY_VISIBILITY_TIMEOUT or lower CELERY_TASK_TIME_LIMIT / "
            "SUPPLIER_RETRY_BACKOFF_MAX.",
            id="core.E020",
        )
    ]


@checks.register("celery", deploy=True)
def check_broker_safety(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Eviction and persistence, asked of the broker's Redis itself (`check --deploy`: every
    command runs the other checks, and cron should not ask Redis each time it runs one)."""
    from core.broker import broker_problems

    kinds = {"error": checks.Error, "warning": checks.Warning, "info": checks.Info}
    ids = {"error": "core.E030", "warning": "core.W031", "info": "core.I032"}
    return [
        kinds[p.severity](p.message, hint=p.hint, id=ids[p.severity])
        for p in broker_problems(settings.CELERY_BROKER_URL, debug=settings.DEBUG)
    ]


def fleet_connections() -> int:
    """PostgreSQL connections the worker fleet of this host may hold at once.

    A gevent node keeps a pool of DB_POOL_MAX_SIZE; a prefork child keeps one (see
    core.worker); the web and the reconciler are not counted here.
    """
    from proj import topology

    size = settings.DATABASES["default"].get("OPTIONS", {}).get("pool", {}).get("max_size", 1)
    total = 0
    for pool in topology.POOLS:
        per_node = size if pool.pool == "gevent" else pool.concurrency
        total += per_node * pool.processes
    return total


@checks.register("database", deploy=True)
def check_connection_budget(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Nodes x their database pools must fit in what PostgreSQL accepts."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return []
    import psycopg

    # A direct connection with a short timeout, not the pool: a build host that cannot
    # reach the database must not wait (or log) the pool's retries.
    url = settings.DATABASE_URL.replace("postgres://", "postgresql://", 1)
    try:
        with psycopg.connect(url, connect_timeout=3) as direct:
            allowed = int(direct.execute("SHOW max_connections").fetchone()[0])
    except psycopg.Error:
        return []  # the database is not reachable from here: other checks say so
    wanted = fleet_connections()
    if wanted <= allowed * 0.8:
        return []
    return [
        checks.Warning(
            f"The worker fleet of this host may hold {wanted} PostgreSQL connections (nodes x "
            f"DB_POOL_MAX_SIZE), more than 80% of the server's max_connections ({allowed}); "
            "the web processes, the reconciler and other hosts need some too.",
            hint="Lower DB_POOL_MAX_SIZE or WORKER_PROCESSES_<POOL>, or raise max_connections.",
            id="core.W040",
        )
    ]
