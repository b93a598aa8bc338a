"""Thin report tasks. Every call carries `report_type=<identifier>`: the topology's router
(`proj.topology.route_report`) sends it to that type's own queue, so no queue is named here.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from reports import services


def _delivered_from(task: Task) -> str:
    """The queue the broker delivered this message from, as the worker saw it."""
    info = task.request.delivery_info or {}
    return str(info.get("routing_key") or info.get("queue") or "")


@shared_task(bind=True, name="reports.tasks.report_run_start")
def report_run_start(self: Task, run_id: int, *, report_type: str) -> bool:
    return services.report_run_start(run_id=run_id, queue=_delivered_from(self))


@shared_task(name="reports.tasks.report_run_gather_part")
def report_run_gather_part(run_id: int, index: int, *, report_type: str) -> dict[str, Any]:
    return services.report_run_gather_part(run_id=run_id, index=index)


@shared_task(name="reports.tasks.report_run_render")
def report_run_render(partials: list[dict[str, Any]], run_id: int, *, report_type: str) -> bool:
    return services.report_run_render(run_id=run_id, partials=partials)
