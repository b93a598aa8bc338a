"""The one place that builds the campaign canvas: the fan-out and a few lanes.

A send starts as group(fan-out, lane x EMAIL_BULK_LANES). The fan-out writes the batches;
each lane claims the next free batch, sends it, and publishes itself again, so at most
EMAIL_BULK_LANES bulk messages per send sit on `notifications.bulk` whatever the campaign's
size: a transactional message never queues behind 1,000 batches. The last lane to find
nothing left publishes the finish step. The reconciler rebuilds the same canvas from what
is still pending when a send stalls (a killed worker, a lost message).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import group
from celery.canvas import Signature
from django.conf import settings
from django.db import transaction

from core import runs
from core.models import OutboxMessage
from core.outbox import outbox_enqueue
from notifications import services
from notifications.models import Campaign, CampaignBatch, CampaignSend
from notifications.tasks import campaign_fan_out, campaign_finish, campaign_send_lane
from proj import topology


def campaign_remaining_work(run: CampaignSend) -> Signature:
    """The fan-out if unfinished, lanes while batches are pending, else the finish step."""
    lanes = [campaign_send_lane.si(run.pk) for _ in range(max(1, settings.EMAIL_BULK_LANES))]
    if run.fanned_out_at is None:
        return group(campaign_fan_out.si(run.pk), *lanes)
    pending = services.campaign_pending_batches(run).count()
    if pending:
        return group(lanes[:pending])
    return campaign_finish.si(run.pk)


class AlreadySending(Exception):
    """The campaign has a send that has not finished: one at a time."""

    def __init__(self, send: CampaignSend) -> None:
        super().__init__(f"{send} of this campaign has not finished yet")
        self.send = send


def campaign_send_request(
    *, campaign: Campaign, trigger: str, requested_by: Any = None
) -> tuple[CampaignSend, OutboxMessage]:
    """Start sending a campaign: nothing but a row and an outbox message in this request.

    Raises AlreadySending while an earlier send is unfinished. Sending a campaign again
    later reaches only recipients it has not reached yet (one key per recipient).
    """
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        unfinished = services.campaign_unfinished_send(locked)
        if unfinished is not None:
            raise AlreadySending(unfinished)
        run = services.campaign_send_create(
            campaign=locked, trigger=trigger, requested_by=requested_by
        )
        message = outbox_enqueue(
            campaign_remaining_work(run), description=f"start campaign send #{run.pk}", run=run
        )
    return run, message


RUN_KIND = runs.RunKind(
    model=CampaignSend,
    item_model=CampaignBatch,
    item_run_field="run",
    remaining_work=campaign_remaining_work,
    cancel=services.campaign_send_cancel,
    queues=lambda send: (topology.BULK_QUEUE,),
)


def campaigns_start_due() -> list[str]:
    """Start every campaign whose send time has come, once each; what happened, in words.

    Safe from several hosts and from both cron and the reconciler's loop: each scheduled
    send is claimed with a guarded UPDATE before it starts.
    """
    from core.outbox import Published
    from notifications import audiences

    said = []
    for campaign in services.campaigns_due():
        if not services.campaign_claim_scheduled(campaign.pk):
            continue  # another process started it a moment ago
        try:
            run, outbox = campaign_send_request(
                campaign=campaign, trigger=CampaignSend.Trigger.SCHEDULE
            )
        except (AlreadySending, audiences.UnknownAudience) as exc:
            said.append(f"Campaign {campaign.pk} ({campaign}): not started: {exc}.")
            continue
        waiting = getattr(outbox, "outcome", None) == Published.FAILED
        said.append(
            f"Campaign {campaign.pk} ({campaign}): started send {run.pk}"
            + (" (saved; starts when the task broker is reachable)" if waiting else "")
            + "."
        )
    return said


def notifications_upkeep(now: datetime) -> str:
    """The reconciler's pass: due campaigns start, and no message is left behind."""
    said = campaigns_start_due()
    swept = services.notifications_sweep(now=now)
    if swept.republished or swept.interrupted or swept.orphaned:
        said.append(swept.summary())
    return "; ".join(said)
