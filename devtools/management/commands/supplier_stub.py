"""Serve the supplier stand-in in the foreground (make run starts it on :8001 with --demo)."""

import contextlib
import textwrap
from typing import Any

from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    DjangoHelpFormatter,
)

from devtools.supplier_stub import DEMO_HELP, StubBehaviour, SupplierStub


def rate(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(value)
    return number


class _HelpFormatter(DjangoHelpFormatter):
    """Keep the description's paragraphs: the demo mode needs more than one line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            textwrap.fill(paragraph, width, initial_indent=indent, subsequent_indent=indent)
            for paragraph in text.split("\n\n")
        )


class Command(BaseCommand):
    help = (
        "A local supplier API: GET /products/<sku> for demo SKUs, POST /status records "
        "status callbacks (GET /status lists them). Flags make it slow or flaky. Without "
        "--demo the catalogue is plain: fixed prices, no failures."
        "\n\n" + DEMO_HELP
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = _HelpFormatter
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--latency-ms", type=float, default=50.0)
        parser.add_argument("--error-rate", type=rate, default=0.0, help="0..1: HTTP 500s")
        parser.add_argument("--malformed-rate", type=rate, default=0.0, help="0..1: bad JSON")
        parser.add_argument("--slow-rate", type=rate, default=0.0, help="0..1: very slow")
        parser.add_argument(
            "--slow-seconds",
            type=float,
            default=30.0,
            help="how late a slow answer comes; keep it above SUPPLIER_READ_TIMEOUT (10 s)",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--demo",
            action="store_true",
            help="drifting prices and a few failing SKUs (see above); make run turns it on",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        behaviour = StubBehaviour(
            latency=options["latency_ms"] / 1000,
            error_rate=options["error_rate"],
            malformed_rate=options["malformed_rate"],
            slow_rate=options["slow_rate"],
            slow_seconds=options["slow_seconds"],
            seed=options["seed"],
            demo=options["demo"],
        )
        try:
            stub = SupplierStub(behaviour, options["host"], options["port"])
        except OSError as exc:
            where = f"{options['host']}:{options['port']}"
            raise CommandError(f"cannot listen on {where}: {exc}") from exc
        self.stdout.write(f"Supplier stand-in on {stub.server.url} ({behaviour})")
        with contextlib.suppress(KeyboardInterrupt):
            stub.server.serve_forever()
