"""Cron, every minute: nothing left behind by a lost task or a killed worker."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from notifications import services


class Command(BaseCommand):
    help = (
        "Queue again the transactional messages that were due and never sent (a lost task, "
        "a killed worker); record bulk messages whose worker died mid-send as failed, "
        "without sending them again. Quiet when there was nothing to do."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = services.notifications_sweep()
        if result.republished or result.interrupted or result.orphaned:
            self.stdout.write(result.summary())
