"""Cron, every minute: start the campaigns whose send time has come."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from notifications import workflows


class Command(BaseCommand):
    help = (
        "Start every campaign whose 'send at' time has come and whose scheduled send has not "
        "started yet (safe to run from several hosts: each campaign starts once). Prints "
        "what it started; nothing when nothing is due."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        for line in workflows.campaigns_start_due():
            (self.stderr if "not started" in line else self.stdout).write(line)
