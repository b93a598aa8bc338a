"""Prepare a local development database: an admin user (and, where apps add it, demo data)."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Local development only: create the admin/admin user and load demo data."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError(
                "local_setup creates a known password; it refuses when DEBUG is off."
            )
        username = os.environ.get("LOCAL_ADMIN_USER", "admin")
        password = os.environ.get("LOCAL_ADMIN_PASSWORD", "admin")
        User = get_user_model()
        if not User.objects.filter(username=username).exists():
            User.objects.create_superuser(username, f"{username}@localhost", password)
        if "seed_demo" in _commands():
            call_command("seed_demo")
        self.stdout.write(
            self.style.SUCCESS(
                f"Log in at http://127.0.0.1:8000/admin/ as {username} / {password} "
                f"(Flower: http://127.0.0.1:{settings.FLOWER_PORT}, same credentials)."
            )
        )


def _commands() -> set[str]:
    from django.core.management import get_commands

    return set(get_commands())
