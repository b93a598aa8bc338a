"""Admin pages and cron commands in this process (nothing here needs a worker)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from notifications.models import CampaignSend, Notification
from tests.notifications.conftest import make_campaign

pytestmark = pytest.mark.django_db


def test_due_campaigns_start_once_and_again_only_when_rescheduled(capsys):
    now = timezone.now()
    due = make_campaign(name="Due", send_at=now - timedelta(minutes=1))
    make_campaign(name="Later", send_at=now + timedelta(hours=1))
    make_campaign(name="Unscheduled")

    call_command("send_due_campaigns")
    call_command("send_due_campaigns")  # the next minute: already started

    [run] = CampaignSend.objects.all()
    assert (run.campaign, run.trigger) == (due, "schedule")
    assert capsys.readouterr().out == f"Campaign {due.pk} (Due): started send {run.pk}.\n"
    CampaignSend.objects.filter(pk=run.pk).update(status="succeeded")
    due.send_at = timezone.now()  # rescheduled: due again
    due.save()
    call_command("send_due_campaigns")
    assert CampaignSend.objects.filter(campaign=due).count() == 2


def test_a_sends_failed_messages_are_one_click_away(admin_client):
    campaign = make_campaign()
    run = CampaignSend.objects.create(campaign=campaign, messages_failed=1, messages_total=2)
    for address, status, error in [("a@x.test", "failed", "recipient refused: 550 gone"),
                                   ("b@x.test", "sent", "")]:  # fmt: skip
        Notification.objects.create(
            kind="bulk", recipient=address, idempotency_key=address, status=status,
            error=error, campaign=campaign, send=run,
        )  # fmt: skip

    page = admin_client.get(run.get_absolute_url()).text
    assert "1 failed: see each with its error" in page
    url = reverse("admin:notifications_notification_changelist")
    listed = admin_client.get(url, {"send__id__exact": run.pk, "status__exact": "failed"})
    assert listed.status_code == 200
    assert "recipient refused: 550 gone" in listed.text and "b@x.test" not in listed.text
    detail = admin_client.get(campaign.get_absolute_url()).text
    assert "1 sent, 1 failed, 0 suppressed, 0 waiting, of 2" in detail
