"""The bulk sender in this process, against the real sink and database: at most once."""

from __future__ import annotations

import pytest
from django.utils import timezone

from notifications import services
from notifications.models import CampaignBatch, CampaignSend, Notification
from tests.notifications.conftest import make_campaign, make_customers, unique_domain


@pytest.fixture
def bulk_settings(in_process_mail):
    in_process_mail.EMAIL_BULK_BATCH_SIZE = 4
    in_process_mail.EMAIL_BULK_SLICE = 2
    return in_process_mail


def fanned_out(domain: str, opted_in: int = 8, opted_out: int = 0) -> CampaignSend:
    make_customers(domain, opted_in=opted_in, opted_out=opted_out)
    run = CampaignSend.objects.create(campaign=make_campaign())
    services.campaign_fan_out(run_id=run.pk)
    run.refresh_from_db()
    return run


@pytest.mark.django_db
def test_a_batch_delivered_twice_sends_each_recipient_once(bulk_settings, smtp):
    run = fanned_out(unique_domain())
    first, second = run.items.order_by("index")
    # Another delivery of the lane is half-way through the first batch: it claimed a slice.
    other_claim = services._claim_messages(
        list(first.notifications.order_by("pk").values_list("pk", flat=True)[:2])
    )
    assert len(other_claim) == 2

    assert services.campaign_lane_step(run_id=run.pk) == services.NEXT
    assert len(smtp.messages()) == 2  # only what the other delivery had not claimed
    assert services.campaign_lane_step(run_id=run.pk) == services.NEXT
    assert len(smtp.messages()) == 6  # the second batch

    # The same batch delivered again after a crash that lost its outcome: nothing is sent.
    CampaignBatch.objects.filter(pk=second.pk).update(status="pending", claimed_until=None)
    assert services.campaign_lane_step(run_id=run.pk) == services.NEXT
    assert len(smtp.messages()) == 6
    claimed = [m.recipient for m in other_claim]
    assert not {r for m in smtp.messages() for r in m.recipients} & set(claimed)


@pytest.mark.django_db
def test_fan_out_twice_adds_nobody_twice_and_suppresses_the_opted_out(bulk_settings):
    run = fanned_out(unique_domain(), opted_in=6, opted_out=2)
    CampaignSend.objects.filter(pk=run.pk).update(fanned_out_at=None, fanout_cursor=None)
    assert services.campaign_fan_out(run_id=run.pk) == 0  # a duplicate delivery: no one new
    run.refresh_from_db()
    assert (run.messages_total, run.messages_suppressed, run.total) == (8, 2, 2 + 0)
    assert Notification.objects.filter(send=run).count() == 8
    suppressed = Notification.objects.filter(send=run, status="suppressed")
    assert {n.error for n in suppressed} == {"not sent: opted out of marketing email"}


@pytest.mark.django_db
def test_sweep_fails_interrupted_bulk_messages_and_requeues_lost_transactional(bulk_settings):
    run = fanned_out(unique_domain(), opted_in=2)
    past = timezone.now() - timezone.timedelta(hours=1)
    Notification.objects.filter(send=run).update(status="sending", claimed_until=past)
    lost = Notification.objects.create(
        recipient="x@example.com", idempotency_key="lost", subject="S", body="B", created_at=past
    )

    result = services.notifications_sweep()

    assert (result.interrupted, result.republished) == (2, 1)
    assert set(Notification.objects.filter(send=run).values_list("status", flat=True)) == {"failed"}
    lost.refresh_from_db()
    assert lost.status == "queued" and lost.next_attempt_at is not None
    assert services.notifications_sweep().republished == 0  # not again before another stall
