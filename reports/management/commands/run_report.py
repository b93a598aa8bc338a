"""Request a report from cron: `run_report <type> [--from --to ...] [--wait]`, `--list`."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from reports import registry, workflows
from reports.models import ReportRun


def cli_options() -> dict[str, dict[str, str]]:
    """Option name -> {type identifier: form field} over every type's parameter form."""
    options: dict[str, dict[str, str]] = {}
    for kind in registry.all_types():
        names = getattr(kind.form_class, "cli_names", {})
        for field in kind.form_class.base_fields:
            option = names.get(field, field.replace("_", "-"))
            options.setdefault(option, {})[kind.identifier] = field
    return options


class Command(BaseCommand):
    help = (
        "Queue a report on its type's own queue. --list shows the types, their queues and "
        "options; --wait waits for the result and exits non-zero if it failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("report_type", nargs="?", help="A type identifier (see --list).")
        parser.add_argument("--list", action="store_true", help="List the report types.")
        parser.add_argument("--wait", action="store_true", help="Wait until the run finishes.")
        parser.add_argument(
            "--timeout", type=float, default=600, help="Seconds --wait waits (default 600)."
        )
        parser.add_argument(
            "--user", help="Username of the requester: gets the email and may download."
        )
        for option, fields in sorted(cli_options().items()):
            parser.add_argument(
                f"--{option}",
                dest=f"param_{option}",
                metavar="VALUE",
                help=f"Parameter of: {', '.join(sorted(fields))}.",
            )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            self.list_types()
            return
        identifier = options["report_type"]
        if not identifier:
            raise CommandError("Give a report type (see --list).")
        try:
            kind = registry.get(identifier)
        except registry.UnknownReportType as exc:
            raise CommandError(str(exc.args[0])) from None

        data: dict[str, str] = {}
        for option, fields in cli_options().items():
            value = options.get(f"param_{option}")
            if value is None:
                continue
            if identifier not in fields:
                raise CommandError(f"--{option} is not a parameter of {identifier}.")
            data[fields[identifier]] = value
        try:
            params = kind.clean_params(data)
        except registry.InvalidParams as exc:
            raise CommandError(f"Invalid parameters for {identifier}: {exc}") from None

        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No user named {options['user']!r}.")
        run = workflows.report_run_request(
            report_type=identifier, params=params, requested_by=user, trigger="command"
        )
        self.stdout.write(f"Queued {kind.label} report #{run.pk} on {kind.queue} ({params}).")
        if options["wait"]:
            self.wait(run, options["timeout"])

    def wait(self, run: ReportRun, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            run.refresh_from_db()
            if run.is_finished:
                break
            if time.monotonic() > deadline:
                raise CommandError(
                    f"Report #{run.pk} still {run.status} after {timeout:.0f}s "
                    f"({run.parts_done}/{run.parts_total} parts); it keeps running."
                )
            time.sleep(0.5)
        if run.status == ReportRun.Status.FAILED:
            raise CommandError(f"Report #{run.pk} failed: {run.error}")
        self.stdout.write(
            self.style.SUCCESS(f"Report #{run.pk} succeeded in {run.duration} on {run.queue}.")
        )
        for ext in ReportRun.FILE_KINDS:
            if run.file_name(ext):
                self.stdout.write(f"  {ext.upper()}: {settings.SITE_URL}{run.download_path(ext)}")

    def list_types(self) -> None:
        names = cli_options()
        for kind in registry.all_types():
            opts = sorted(f"--{o}" for o, f in names.items() if kind.identifier in f)
            self.stdout.write(f"{kind.identifier:<16} {kind.queue:<24} {kind.label}")
            self.stdout.write(f"{'':<16} options: {' '.join(opts) or '(none)'}")
