"""Serve the warehouse API (POST /pick) stand-in, in the foreground
(make run starts it on :8002)."""

import contextlib
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from devtools.fulfilment_stub import WarehouseStub


class Command(BaseCommand):
    help = (
        "A local stand-in for the warehouse API (POST /pick), one call per fulfilment "
        "batch; it honours "
        "Idempotency-Key. GET /stats tells what it saw."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8002)
        parser.add_argument("--latency-ms", type=float, default=20.0, help="per call")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["latency_ms"] < 0:
            raise CommandError("--latency-ms must be 0 or more")
        try:
            stub = WarehouseStub(
                host=options["host"], port=options["port"], latency=options["latency_ms"] / 1000
            )
        except OSError as exc:
            where = f"{options['host']}:{options['port']}"
            raise CommandError(f"cannot listen on {where}: {exc}") from exc
        self.stdout.write(
            f"Warehouse stand-in on {stub.server.url} (latency {options['latency_ms']} ms)"
        )
        with contextlib.suppress(KeyboardInterrupt):
            stub.server.serve_forever()
