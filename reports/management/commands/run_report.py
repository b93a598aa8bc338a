"""Request a report from cron: `run_report <type> [--from --to ...] [--wait]`, `--list`."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import cli
from core.outbox import Published
from core.text import seconds
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
        "options; --wait waits for the result. Exit codes: 0 done, 1 failed, 3 cancelled, "
        "4 the task broker is down (the run is saved; the reconciler starts it), 5 --timeout "
        "ran out."
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
            # The options the person typed (--threshold), not our field names.
            option_of = {f[identifier]: o for o, f in cli_options().items() if identifier in f}
            problems = [
                f"{'' if field == '__all__' else '--' + option_of.get(field, field) + ': '}{e}"
                for field, errors in exc.form.errors.items()
                for e in errors
            ]
            raise CommandError(
                f"Invalid options for {identifier}: {'; '.join(problems)} Nothing queued."
            ) from None

        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No user named {options['user']!r}.")
        run, outbox = workflows.report_run_request(
            report_type=identifier, params=params, requested_by=user, trigger="command"
        )
        if getattr(outbox, "outcome", None) == Published.FAILED:
            self.stderr.write(cli.NOT_PUBLISHED.format(pk=run.pk))
            sys.exit(cli.EXIT_NOT_PUBLISHED)
        what = kind.describe(kind.parse_params(params))
        self.stdout.write(f"Queued {kind.label} report #{run.pk} ({what}) on {kind.queue}.")
        if options["wait"]:
            self.wait(run, options["timeout"])

    def wait(self, run: ReportRun, timeout: float) -> None:
        if not cli.wait_settled(run, out=self.stdout, timeout=timeout):
            self.stderr.write(
                f"Report #{run.pk} still {run.get_status_display().lower()} after "
                f"{timeout:.0f} s ({run.succeeded}/{run.total} parts); it keeps running."
            )
            sys.exit(cli.EXIT_TIMEOUT)
        if run.status == ReportRun.Status.SUCCEEDED:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Report #{run.pk} succeeded in {seconds(run.duration)} on {run.queue}."
                )
            )
            for ext in ReportRun.FILE_KINDS:
                if run.file_name(ext):
                    self.stdout.write(
                        f"  {ext.upper()}: {settings.SITE_URL}{run.download_path(ext)}"
                    )
        else:
            self.stderr.write(
                f"Report #{run.pk} {run.get_status_display().lower()}: {run.error or '-'}"
            )
        sys.exit(cli.run_exit_code(run))

    def list_types(self) -> None:
        names = cli_options()
        for kind in registry.all_types():
            opts = sorted(f"--{o}" for o, f in names.items() if kind.identifier in f)
            self.stdout.write(f"{kind.identifier:<16} {kind.queue:<24} {kind.label}")
            self.stdout.write(f"{'':<16} options: {' '.join(opts) or '(none)'}")
