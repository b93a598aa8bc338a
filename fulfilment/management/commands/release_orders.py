"""Cron entry point: release placed orders for fulfilment (the aggregator batches them)."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import cli
from core.outbox import Published
from core.text import plural, seconds
from fulfilment import services
from fulfilment.models import Fulfilment
from fulfilment.workflows import orders_release_request
from shop.models import Order


def positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Release orders for fulfilment: every placed or paid order never released (the "
        "default, what cron runs), or --order REF [REF ...]. --warehouse sends them all to "
        "one warehouse instead of the assignment rule. With --wait, waits until every "
        f"released order shipped or failed and exits {cli.EXIT_ITEMS_FAILED} if some failed. "
        f"Exits {cli.EXIT_NOT_PUBLISHED} when the task broker is down (the orders are "
        f"released and the reconciler batches them later), {cli.EXIT_TIMEOUT} when "
        "--timeout runs out."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--order", nargs="+", metavar="REF", help="Only these orders.")
        codes = ", ".join(settings.FULFILMENT_WAREHOUSES)
        parser.add_argument("--warehouse", metavar="CODE", help=f"One of: {codes}.")
        parser.add_argument("--wait", action="store_true", help="Wait and show progress.")
        parser.add_argument("--timeout", type=positive, default=None, metavar="SECONDS",
                            help="With --wait: give up waiting after this long.")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        warehouse = options["warehouse"]
        if warehouse is not None and warehouse not in settings.FULFILMENT_WAREHOUSES:
            raise CommandError(
                f"Unknown warehouse {warehouse!r}; configured (FULFILMENT_WAREHOUSES): "
                f"{', '.join(settings.FULFILMENT_WAREHOUSES)}. Nothing released."
            )
        if options["timeout"] is not None and not options["wait"]:
            raise CommandError("--timeout only applies with --wait. Nothing released.")
        if options["order"]:
            wanted = set(options["order"])
            found = dict(Order.objects.filter(reference__in=wanted).values_list("reference", "pk"))
            unknown = wanted - found.keys()
            if unknown:
                raise CommandError(
                    f"Unknown order reference(s): {', '.join(sorted(unknown))}. Nothing released."
                )
            ids = list(found.values())
        else:
            ids = services.orders_releasable()
        if not ids:
            self.stdout.write("No orders to release; nothing done.")
            return
        released, message = orders_release_request(order_ids=ids, warehouse=warehouse)
        self.stdout.write(released.summary())
        if message is not None and getattr(message, "outcome", None) == Published.FAILED:
            self.stderr.write(
                "The task broker is not reachable: the orders are released and will be "
                "batched when it is (the reconciler, `manage.py reconcile_runs`, does it)."
            )
            sys.exit(cli.EXIT_NOT_PUBLISHED)
        if options["wait"] and released.released:
            self.wait(ids, options["timeout"])

    def wait(self, order_ids: list[int], timeout: float | None) -> None:
        started = time.monotonic()
        rows = Fulfilment.objects.filter(order_id__in=order_ids)
        final = [Fulfilment.Status.SHIPPED, Fulfilment.Status.FAILED, Fulfilment.Status.CANCELLED]
        total = rows.count()
        last = ""
        while True:
            done = rows.filter(status__in=final).count()
            line = f"{done:,}/{total:,} shipped or failed"
            if line != last:
                self.stdout.write(f"Progress: {line}")
                last = line
            if done >= total:
                break
            if timeout and time.monotonic() - started > timeout:
                self.stderr.write(
                    f"{plural(total - done, 'order')} still on their way after {timeout:.0f} s "
                    "(they keep going; see the fulfilment pipeline in the admin)."
                )
                sys.exit(cli.EXIT_TIMEOUT)
            time.sleep(0.5)
        failed = list(
            rows.exclude(status=Fulfilment.Status.SHIPPED)
            .select_related("order")
            .order_by("order__reference")
        )
        for f in failed[:20]:
            self.stderr.write(f"  {f.order.reference}: {f.get_status_display()}: {f.error}")
        took = seconds(timedelta(seconds=time.monotonic() - started))
        self.stdout.write(
            f"{plural(total - len(failed), 'order')} shipped, {len(failed):,} failed or "
            f"cancelled, in {took}."
        )
        sys.exit(cli.EXIT_ITEMS_FAILED if failed else cli.EXIT_OK)
