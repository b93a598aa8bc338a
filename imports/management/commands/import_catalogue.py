"""Cron entry point: import a catalogue CSV as a user, optionally waiting for the result."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import cli
from core.outbox import Published
from core.text import plural, seconds
from imports import services, workflows
from imports.models import ImportRun
from imports.parsing import BadFile, too_big_message
from imports.storage import keep_confirmed


def positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Import a catalogue CSV (sku plus any of price, currency, stock, name, description) "
        "as --user NAME, whose per-user queue it runs on. Rows with errors are listed and "
        "skipped; a bad file (encoding, columns, duplicate SKUs, formulas, size) starts "
        "nothing. --dry-run shows what would change. With --wait, waits and exits "
        f"{cli.EXIT_ITEMS_FAILED} if rows failed, {cli.EXIT_CANCELLED} if cancelled, "
        f"{cli.EXIT_NOT_PUBLISHED} when the broker is down (the run starts later), "
        f"{cli.EXIT_TIMEOUT} when --timeout runs out."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE")
        parser.add_argument(
            "--user",
            required=True,
            metavar="NAME",
            help="Staff user the import runs as (and whose queue it uses).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Show, change nothing.")
        parser.add_argument("--wait", action="store_true", help="Wait and show progress.")
        parser.add_argument("--timeout", type=positive, default=None, metavar="SECONDS",
                            help="With --wait: give up waiting after this long.")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        user = self._user(options["user"])
        path = Path(options["file"])
        data = self._read(path)
        try:
            validation = services.catalogue_validate(data, user=user)
        except BadFile as exc:
            raise CommandError(f"{path}: {exc} Nothing imported.") from None
        self.stdout.write(f"{path.name}: {validation.summary()}.")
        for line, sku, message in validation.rejected[:20]:
            self.stderr.write(f"  line {line} ({sku or 'no SKU'}): {message}")
        if len(validation.rejected) > 20:
            self.stderr.write(f"  ... and {len(validation.rejected) - 20:,} more")
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing changed.")
            return
        if not validation.rows:
            raise CommandError("Every row has errors: nothing imported.")

        def keep_file(run: ImportRun) -> None:
            run.stored_file = keep_confirmed(data, run.pk)
            run.save(update_fields=["stored_file"])

        run, outbox = workflows.import_run_request(
            validation=validation,
            file_name=path.name,
            trigger=ImportRun.Trigger.COMMAND,
            requested_by=user,
            after_create=keep_file,
        )
        if getattr(outbox, "outcome", None) == Published.FAILED:
            self.stderr.write(cli.NOT_PUBLISHED.format(pk=run.pk))
            sys.exit(cli.EXIT_NOT_PUBLISHED)
        self.stdout.write(
            f"Started import {run.pk}: {plural(len(validation.rows), 'row')} in "
            f"{plural(run.total, 'chunk')} on queue {run.queue}."
        )
        if options["wait"]:
            self._wait(run, options["timeout"])

    def _user(self, name: str) -> Any:
        user = get_user_model().objects.filter(username=name, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user {name!r}. Nothing imported.")
        if not user.has_perm("imports.add_importrun"):
            raise CommandError(
                f"User {name!r} may not import (needs the 'Can add import run' permission). "
                "Nothing imported."
            )
        return user

    def _read(self, path: Path) -> bytes:
        try:
            size = os.stat(path).st_size  # before reading: a 2 GB file is refused unread
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}. Nothing imported.") from None
        if size > settings.IMPORTS_MAX_UPLOAD_BYTES:
            raise CommandError(f"{path}: {too_big_message(size)}")
        return path.read_bytes()

    def _wait(self, run: ImportRun, timeout: float | None) -> None:
        if not cli.wait_settled(run, out=self.stdout, timeout=timeout):
            self.stderr.write(
                f"Import {run.pk} is still {run.get_status_display().lower()} after "
                f"{timeout:.0f} s (it keeps going; see its admin page)."
            )
            sys.exit(cli.EXIT_TIMEOUT)
        self.stdout.write(
            f"Import {run.pk} {run.get_status_display().lower()}: {run.rows_created:,} new, "
            f"{run.rows_updated:,} updated, {run.rows_unchanged:,} unchanged, "
            f"{run.rows_failed:,} refused, in {seconds(run.duration)}."
        )
        sys.exit(cli.run_exit_code(run))
