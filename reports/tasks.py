"""Thin report tasks. The workflow sets each signature's queue to its type's own queue
(`reports/workflows.py`), so no queue or route is named here.
"""

from __future__ import annotations

from celery import Task, shared_task

from core.tasks import ShopTask
from reports import services

RUN = "reports.ReportRun"


def _delivered_from(task: Task) -> str:
    """The queue the broker delivered this message from, as the worker saw it."""
    info = task.request.delivery_info or {}
    return str(info.get("routing_key") or info.get("queue") or "")


@shared_task(bind=True, base=ShopTask, run_model=RUN, name="reports.tasks.report_run_gather_part")
def report_run_gather_part(self: Task, run_id: int, index: int) -> bool:
    return services.report_run_gather_part(run_id=run_id, index=index, queue=_delivered_from(self))


@shared_task(base=ShopTask, run_model=RUN, name="reports.tasks.report_run_render")
def report_run_render(run_id: int) -> bool:
    return services.report_run_render(run_id=run_id)
