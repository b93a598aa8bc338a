"""System checks for report types: each one's queue must be consumed by a worker pool."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from reports import registry


@checks.register("celery")
def check_report_types(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    try:
        types = registry.all_types()
    except ImportError as exc:
        return [checks.Error(f"Report types could not be loaded: {exc}", id="reports.E000")]
    consumed = {q for pool in getattr(settings, "WORKER_POOLS", ()) for q in pool.queues}
    for kind in types:
        module = registry.module_name(kind.identifier)
        if kind.identifier != module:
            errors.append(
                checks.Error(
                    f"Report type {type(kind).__name__} declares identifier "
                    f"{kind.identifier!r} but lives in reports/types/{module}.py: queues and "
                    "pools are derived from the module name, so they would not match.",
                    hint=f"Rename the module to {kind.identifier}.py or the identifier to "
                    f"{module!r}.",
                    id="reports.E002",
                )
            )
        if kind.queue not in consumed:
            errors.append(
                checks.Error(
                    f"Report type {kind.identifier!r} sends its tasks to queue "
                    f"{kind.queue!r}, which no worker pool consumes: its reports would "
                    "wait for ever.",
                    hint="Report pools are derived from reports/types/ in proj/topology.py; "
                    "make sure WORKER_POOLS is topology.POOLS and regenerate the Procfile "
                    "(python manage.py workers procfile > Procfile).",
                    id="reports.E001",
                )
            )
    return errors
