"""System checks that keep settings, routes and worker pools consistent with each other.

They read the live settings (CELERY_TASK_QUEUES, CELERY_TASK_ROUTES, WORKER_POOLS), so a
hand-edited setting that drifts from proj/topology.py is caught by `manage.py check`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core import checks

from proj import topology

SERIALIZER_SETTINGS = (
    "CELERY_TASK_SERIALIZER",
    "CELERY_RESULT_SERIALIZER",
    "CELERY_EVENT_SERIALIZER",
)
CONTENT_SETTINGS = ("CELERY_ACCEPT_CONTENT", "CELERY_RESULT_ACCEPT_CONTENT")
HOW_TO_FIX = "Fix it in proj/topology.py; settings, Procfile and workers derive from it."


def _route_targets(routes: Any) -> dict[str, str]:
    """Static routes (dicts) as pattern -> queue; router functions report via topology."""
    targets: dict[str, str] = {}
    for entry in routes if isinstance(routes, list | tuple) else [routes]:
        if isinstance(entry, dict):
            for pattern, target in entry.items():
                queue = target.get("queue") if isinstance(target, dict) else target
                targets[pattern] = str(queue)
        elif entry == "proj.topology.route_report" or entry is topology.route_report:
            targets.update(
                {k: v for k, v in topology.routed_queues().items() if k.startswith("reports.")}
            )
    return targets


def _queue_names(queues: Iterable[Any]) -> set[str]:
    return {getattr(q, "name", q) for q in queues or ()}


@checks.register("celery")
def check_topology(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    declared = _queue_names(getattr(settings, "CELERY_TASK_QUEUES", ()))
    pools = getattr(settings, "WORKER_POOLS", ())
    consumed = {q for pool in pools for q in pool.queues}

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
