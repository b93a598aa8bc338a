"""Serve the SMTP sink in the foreground (make run starts it on :1025), or list what it kept."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devtools.smtp_sink import Received, SmtpSink, refuse_matching, stored


def pattern(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(value) from exc
    return value


class Command(BaseCommand):
    help = (
        "A local SMTP server standing in for the email provider: accepts every message, "
        "stores it as an .eml file under --store (default var/mail) and prints one line "
        "per message. --list prints what it stored and exits. --refuse REGEX answers "
        "'550 Recipient refused' to matching recipients (a permanent failure to try)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=1025)
        parser.add_argument("--store", type=Path, default=None, metavar="DIR")
        parser.add_argument("--refuse", type=pattern, default=None, metavar="REGEX")
        parser.add_argument("--list", action="store_true", help="List stored messages.")

    def handle(self, *args: Any, **options: Any) -> None:
        store = options["store"] or Path(settings.VAR_DIR) / "mail"
        if options["list"]:
            messages = stored(store) if store.exists() else []
            for message in messages:
                self.stdout.write(message.summary())
            self.stdout.write(f"{len(messages)} message(s) in {store}.")
            return
        refuse = refuse_matching(options["refuse"]) if options["refuse"] else None
        sink = SmtpSink(
            options["host"], options["port"], store_dir=store, refuse=refuse, echo=self.echo
        )
        try:
            sink.start()
        except Exception as exc:
            where = f"{options['host']}:{options['port']}"
            raise CommandError(f"cannot listen on {where}: {exc}") from exc
        self.stdout.write(f"SMTP sink on {options['host']}:{sink.port}, storing in {store}")
        self.stdout.flush()
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        sink.stop()

    def echo(self, message: Received) -> None:
        self.stdout.write(message.summary())
        self.stdout.flush()
