"""Run Flower with the project's Celery app: basic auth required, read-only by default."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.flower_app import ALLOW_CONTROL_ENV, serve


class Command(BaseCommand):
    help = (
        "Run Flower (the Celery monitor) behind basic auth from FLOWER_BASIC_AUTH "
        "(user:password[,user2:password2]) on every page, /metrics included. Read-only "
        f"unless {ALLOW_CONTROL_ENV}=1 (revoke, pool, consumer, shutdown and limit "
        "controls). --insecure-local-dev runs without auth, and only when DEBUG is on."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=settings.FLOWER_PORT)
        parser.add_argument("--address", default=os.environ.get("FLOWER_ADDRESS", "127.0.0.1"))
        parser.add_argument(
            "--insecure-local-dev",
            action="store_true",
            help="Run without authentication (refused unless DEBUG is on).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        auth = settings.FLOWER_BASIC_AUTH
        if auth:
            pairs = [p for p in auth.split(",") if p]
            if not pairs or any(
                ":" not in p or p.startswith(":") or p.endswith(":") for p in pairs
            ):
                raise CommandError(
                    "FLOWER_BASIC_AUTH must be user:password (comma-separate several pairs)."
                )
        elif not options["insecure_local_dev"]:
            raise CommandError(
                "Flower refuses to start without authentication: set FLOWER_BASIC_AUTH="
                "user:password, or pass --insecure-local-dev on your own machine."
            )
        elif not settings.DEBUG:
            raise CommandError("--insecure-local-dev is refused when DEBUG is off.")
        allow_control = os.environ.get(ALLOW_CONTROL_ENV, "").strip().lower() in {
            "1", "true", "yes", "on",
        }  # fmt: skip

        from proj.celery import app

        # Flower runs in this process and reads FLOWER_BASIC_AUTH from the environment
        # itself, so the password never appears in the process list.
        serve(app, port=options["port"], address=options["address"], allow_control=allow_control)
