"""Campaigns as staff and cron send them: admin action or command -> real workers -> sink."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from core.waiting import wait_for
from notifications.models import CampaignSend, Notification
from tests.notifications.conftest import make_campaign, make_customers, unique_domain
from tests.shop.conftest import csrf_client, csrf_token
from tests.support.factories import make_staff

pytestmark = pytest.mark.workers
CHANGELIST = reverse("admin:notifications_campaign_changelist")


def send_action(client, campaign):
    token = csrf_token(client, CHANGELIST)
    return client.post(
        CHANGELIST,
        {"action": "send_now", "_selected_action": [campaign.pk], "csrfmiddlewaretoken": token},
        follow=True,
    )


def finished(run: CampaignSend) -> CampaignSend:
    def done() -> CampaignSend | None:
        run.refresh_from_db()
        return run if run.is_finished else None

    return wait_for(done, timeout=60, what=f"{run} to finish")


def test_admin_sends_to_opted_in_customers_once_and_shows_progress(workers, smtp, capsys):
    domain = unique_domain()
    make_customers(domain, opted_in=12, opted_out=3)
    campaign = make_campaign()
    viewer = make_staff("viewer", "view_campaign")
    sender = make_staff("sender", "view_campaign", "send_campaign", "view_campaignsend")

    viewer_client = csrf_client(viewer)
    assert "Send the selected campaigns now" not in viewer_client.get(CHANGELIST).text
    send_action(viewer_client, campaign)  # a forged POST without the permission
    assert not CampaignSend.objects.exists()

    client = csrf_client(sender)
    page = send_action(client, campaign)
    run = CampaignSend.objects.get()
    assert f'Started <a href="{run.get_absolute_url()}">Campaign send #{run.pk}</a>' in page.text
    run = finished(run)

    assert run.status == "succeeded", run.error
    assert run.total == 3  # 12 recipients in batches of 5
    got = sorted(r for m in smtp.messages() for r in m.recipients)
    assert got == sorted(f"in{i}@{domain}" for i in range(12))  # each once, opted-out none
    assert {m.subject for m in smtp.messages()} == {"Spring sale: 20% off"}
    statuses = Notification.objects.filter(campaign=campaign).values_list("status", flat=True)
    assert sorted(set(statuses)) == ["sent", "suppressed"]
    assert (run.messages_sent, run.messages_suppressed, run.messages_total) == (12, 3, 15)
    detail = client.get(campaign.get_absolute_url()).text
    assert "12 sent, 0 failed, 3 suppressed, 0 waiting, of 15" in detail

    # Sent again (cron, or a second click later): nobody gets it twice.
    with pytest.raises(SystemExit) as exit_code:
        call_command("send_campaign", str(campaign.pk), "--wait", "--timeout", "60")
    assert exit_code.value.code == 0
    out = capsys.readouterr().out
    assert "0 sent, 0 failed, 0 suppressed of 0 (15 already had it from an earlier send)" in out
    assert len(smtp.messages()) == 12


def test_unknown_campaign_or_an_unfinished_send_starts_nothing(workers, capsys):
    campaign = make_campaign()
    with pytest.raises(CommandError, match=r"No campaign with id 999999\. Nothing sent\."):
        call_command("send_campaign", "999999")
    CampaignSend.objects.create(campaign=campaign)  # pending: e.g. waiting for the broker
    with pytest.raises(CommandError, match=r"has not finished yet\. Nothing sent again\."):
        call_command("send_campaign", str(campaign.pk))
    assert CampaignSend.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_waiting_for_a_send_no_worker_has_started_says_so_without_zero_counts(
    unread_broker, capsys
):
    """Before the fan-out has counted the recipients the send has no total: the waiting
    command says what it is doing instead of "0/0 done"."""
    make_customers(unique_domain(), opted_in=2, opted_out=0)
    campaign = make_campaign()
    with pytest.raises(SystemExit) as exit_code:
        call_command("send_campaign", str(campaign.pk), "--wait", "--timeout", "1")
    assert exit_code.value.code == 5  # still waiting when the timeout ran out
    out = capsys.readouterr().out
    assert "Progress: pending, counting the work" in out
    assert "0/0" not in out
    assert CampaignSend.objects.get(campaign=campaign).status == "pending"
    assert unread_broker.llen("notifications.bulk")  # its work waits for a worker
