"""Cron (every minute) or a loop (Procfile, make run): make every run finish."""

from __future__ import annotations

import signal
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, close_old_connections

from core.reconciler import reconcile


class Command(BaseCommand):
    help = (
        "Publish runs the broker missed, resume runs that stalled (no progress for "
        "RUN_STALL_AFTER seconds), finish runs whose work is done and re-send overdue status "
        "callbacks. Run it from cron every minute, or with --loop SECONDS as a process."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--loop",
            type=float,
            nargs="?",
            const=float(settings.RECONCILE_INTERVAL),
            default=None,
            metavar="SECONDS",
            help=f"Run forever, a pass every SECONDS (default {settings.RECONCILE_INTERVAL}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        interval = options["loop"]
        if interval is None:
            self.one_pass(quiet_when_idle=False)
            return
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"Reconciling runs every {interval:g} s (Ctrl-C stops).")
        while not stopping:
            self.one_pass(quiet_when_idle=True)
            deadline = time.monotonic() + interval
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.2)

    def one_pass(self, *, quiet_when_idle: bool) -> None:
        close_old_connections()
        try:
            result = reconcile()
        except DatabaseError as exc:  # the database is down: try again next pass
            self.stderr.write(f"Reconciler: the database is not reachable ({exc}); retrying.")
            return
        if result.acted or result.publish_failed or not quiet_when_idle:
            self.stdout.write(f"Reconciler: {result.summary()}")
            self.stdout.flush()
