"""Send one campaign now, from cron or a terminal."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import cli
from core.outbox import Published
from notifications import audiences, workflows
from notifications.admin import messages_text
from notifications.models import Campaign, CampaignSend


def positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Send campaign ID now: prints the send's id. Recipients an earlier send already "
        "reached are not sent again. With --wait, waits until the send has finished and "
        f"exits {cli.EXIT_ITEMS_FAILED} if messages failed, {cli.EXIT_CANCELLED} if it was "
        f"cancelled. Exits {cli.EXIT_NOT_PUBLISHED} when the task broker is down (the send is "
        f"saved and the reconciler starts it later), {cli.EXIT_TIMEOUT} when --timeout runs out."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign_id", type=int, metavar="ID")
        parser.add_argument("--wait", action="store_true", help="Wait and show progress.")
        parser.add_argument("--timeout", type=positive, default=None, metavar="SECONDS",
                            help="With --wait: give up waiting after this long.")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = Campaign.objects.filter(pk=options["campaign_id"]).first()
        if campaign is None:
            raise CommandError(f"No campaign with id {options['campaign_id']}. Nothing sent.")
        run = self.start(campaign, CampaignSend.Trigger.COMMAND)
        if options["wait"]:
            self.wait(run, options["timeout"])

    def start(self, campaign: Campaign, trigger: str) -> CampaignSend:
        try:
            run, outbox = workflows.campaign_send_request(campaign=campaign, trigger=trigger)
        except workflows.AlreadySending as exc:
            raise CommandError(
                f"Campaign {campaign.pk} ({campaign}): {exc}. Nothing sent again."
            ) from exc
        except audiences.UnknownAudience as exc:
            raise CommandError(
                f"Campaign {campaign.pk} ({campaign}): {exc}. Nothing sent."
            ) from exc
        if getattr(outbox, "outcome", None) == Published.FAILED:
            self.stderr.write(cli.NOT_PUBLISHED.format(pk=run.pk))
            sys.exit(cli.EXIT_NOT_PUBLISHED)
        self.stdout.write(f"Started campaign send {run.pk} of campaign {campaign.pk} ({campaign}).")
        return run

    def wait(self, run: CampaignSend, timeout: float | None) -> None:
        cli.wait_or_exit(run, out=self.stdout, err=self.stderr, timeout=timeout, label="Send")
        self.stdout.write(
            f"Send {run.pk} {run.get_status_display().lower()}: {messages_text(run)}."
        )
        if run.status == CampaignSend.Status.CANCELLED:
            sys.exit(cli.EXIT_CANCELLED)
        sys.exit(cli.EXIT_ITEMS_FAILED if run.messages_failed else cli.EXIT_OK)
