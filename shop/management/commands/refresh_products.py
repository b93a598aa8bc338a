"""Cron entry point: refresh all, stale or chosen products from the supplier."""

from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop.models import Product, RefreshRun
from shop.services import products_stale
from shop.workflows import refresh_start

EXIT_PRODUCTS_FAILED = 1
EXIT_CALLBACK_FAILED = 2


def positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Refresh product details from the supplier: all products, only those not refreshed "
        "for --stale-after HOURS, or --sku SKU [SKU ...]. Prints the run id. With --wait, "
        f"shows progress and exits {EXIT_PRODUCTS_FAILED} if products failed, "
        f"{EXIT_CALLBACK_FAILED} if the status callback failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--stale-after", type=positive, metavar="HOURS")
        which.add_argument("--sku", nargs="+", metavar="SKU")
        parser.add_argument("--wait", action="store_true", help="Wait and show progress.")
        parser.add_argument("--timeout", type=positive, default=None, metavar="SECONDS",
                            help="With --wait: give up waiting after this long.")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        if options["sku"]:
            wanted = set(options["sku"])
            products = Product.objects.filter(sku__in=wanted)
            unknown = wanted - set(products.values_list("sku", flat=True))
            if unknown:
                raise CommandError(
                    f"Unknown SKU(s): {', '.join(sorted(unknown))}. Nothing started."
                )
        elif options["stale_after"]:
            products = products_stale(hours=options["stale_after"])
        else:
            products = Product.objects.all()
        ids = list(products.values_list("pk", flat=True))
        if not ids:
            self.stdout.write("No products to refresh; nothing started.")
            return
        run = refresh_start(product_ids=ids, trigger=RefreshRun.Trigger.COMMAND)
        self.stdout.write(f"Started refresh run {run.pk} for {len(ids)} products.")
        if options["wait"]:
            self.wait(run, options["timeout"])

    def wait(self, run: RefreshRun, timeout: float | None) -> None:
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            run.refresh_from_db()
            self.progress(run)
            if run.is_finished:
                break
            if deadline and time.monotonic() > deadline:
                self.stdout.write("")
                raise CommandError(f"Run {run.pk} still {run.status} after {timeout:.0f} s.")
            time.sleep(0.5)
        self.stdout.write("")
        self.stdout.write(
            f"Run {run.pk} {run.status}: {run.succeeded} refreshed, {run.failed} failed. "
            f"Callback: {run.callback_status or '-'}"
        )
        if run.status == RefreshRun.Status.FAILED:
            for item in run.items.filter(status="failed").select_related("product")[:20]:
                self.stderr.write(f"  {item.product.sku}: {item.error}")
            sys.exit(EXIT_PRODUCTS_FAILED)
        if run.status == RefreshRun.Status.CALLBACK_FAILED:
            sys.exit(EXIT_CALLBACK_FAILED)

    def progress(self, run: RefreshRun) -> None:
        width = 30
        filled = int(width * run.done / max(run.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        self.stdout.write(
            f"\r[{bar}] {run.done}/{run.total} ({run.failed} failed) {run.status}", ending=""
        )
        self.stdout.flush()
