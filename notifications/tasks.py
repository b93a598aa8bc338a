"""Thin notification tasks: call a service, publish what it asks for next.

Routes (by message kind) come from proj/topology/notifications.py: the transactional send
goes to `notifications`, every campaign task to `notifications.bulk`.
"""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from core.tasks import ShopTask
from notifications import services

RUN = "notifications.CampaignSend"


@shared_task(
    bind=True,
    base=ShopTask,
    name="notifications.tasks.notification_send",
    max_retries=settings.EMAIL_MAX_RETRIES + settings.TASK_DB_MAX_RETRIES,
)
def notification_send(self: Task, notification_id: int) -> str:
    """One transactional message; a transient SMTP error is retried with backoff and jitter."""
    delay = services.notification_send(notification_id=notification_id)
    if delay is not None:
        raise self.retry(countdown=delay)
    return "done"


@shared_task(bind=True, base=ShopTask, run_model=RUN, name="notifications.tasks.campaign_fan_out")
def campaign_fan_out(self: Task, run_id: int) -> int:
    """Write the send's notifications and batches; the lanes pick the batches up."""
    return services.campaign_fan_out(run_id=run_id)


@shared_task(bind=True, base=ShopTask, run_model=RUN, name="notifications.tasks.campaign_send_lane")
def campaign_send_lane(self: Task, run_id: int) -> str:
    """Send one batch, then hand over to the next delivery of this lane.

    A lane never waits in its slot: told to wait (rate limit, SMTP backoff), it publishes
    itself again with that countdown and returns, and its slot serves other messages.
    """
    step = services.campaign_lane_step(run_id=run_id)
    if step.action == "next":
        campaign_send_lane.apply_async((run_id,))
    elif step.action == "park":
        campaign_send_lane.apply_async((run_id,), countdown=step.delay)
    elif step.action == "finish":
        campaign_finish.apply_async((run_id,))
    return step.action


@shared_task(bind=True, base=ShopTask, run_model=RUN, name="notifications.tasks.campaign_finish")
def campaign_finish(self: Task, run_id: int) -> str:
    return services.campaign_send_finish(run_id=run_id) or "not finished"
