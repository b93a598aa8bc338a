"""Cron entry point: refresh all, stale or chosen products from the supplier."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import cli
from core.outbox import Published
from core.text import plural, seconds
from shop.models import Product, RefreshItem, RefreshRun
from shop.services import products_stale
from shop.workflows import refresh_run_request


def non_negative(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError(value)
    return number


def positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(value)
    return number


def exit_code(run: RefreshRun) -> int:
    if run.status == RefreshRun.Status.CANCELLED:
        return cli.EXIT_CANCELLED
    if run.callback_state == RefreshRun.Callback.FAILED:
        return cli.EXIT_CALLBACK_FAILED
    return cli.run_exit_code(run)


class Command(BaseCommand):
    help = (
        "Refresh product details from the supplier: all products, only those not refreshed "
        "for --stale-after HOURS (0: all), or --sku SKU [SKU ...]. Prints the run id. With "
        "--wait, waits until the run has settled (status callback included) and exits "
        f"{cli.EXIT_ITEMS_FAILED} if products failed, {cli.EXIT_CALLBACK_FAILED} if the "
        f"status callback failed, {cli.EXIT_CANCELLED} if the run was cancelled. Exits "
        f"{cli.EXIT_NOT_PUBLISHED} when the task broker is down (the run is saved and the "
        f"reconciler starts it later), {cli.EXIT_TIMEOUT} when --timeout runs out."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--stale-after", type=non_negative, metavar="HOURS")
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
        elif options["stale_after"] is not None:
            products = products_stale(hours=options["stale_after"])
        else:
            products = Product.objects.all()
        ids = list(products.values_list("pk", flat=True))
        if not ids:
            self.stdout.write("No products to refresh; nothing started.")
            return
        run, outbox = refresh_run_request(product_ids=ids, trigger=RefreshRun.Trigger.COMMAND)
        if getattr(outbox, "outcome", None) == Published.FAILED:
            self.stderr.write(cli.NOT_PUBLISHED.format(pk=run.pk))
            sys.exit(cli.EXIT_NOT_PUBLISHED)
        self.stdout.write(f"Started refresh run {run.pk} for {plural(len(ids), 'product')}.")
        if options["wait"]:
            self.wait(run, options["timeout"])

    def wait(self, run: RefreshRun, timeout: float | None) -> None:
        cli.wait_or_exit(run, out=self.stdout, err=self.stderr, timeout=timeout)
        if run.failed:
            failed = run.items.filter(status=RefreshItem.Status.FAILED).select_related("product")
            for item in failed.order_by("product__sku")[:20]:
                self.stderr.write(f"  {item.product.sku}: {item.error}")
            if run.failed > 20:
                self.stderr.write(f"  ... and {run.failed - 20:,} more (see the run's admin page)")
        callback = run.get_callback_state_display().lower()
        detail = run.callback_detail
        if not detail.startswith(callback):  # "delivered (HTTP 200)" says it already
            detail = f"{callback}, {detail}" if detail else callback
        self.stdout.write(
            f"Run {run.pk} {run.get_status_display().lower()}: {run.succeeded:,} refreshed, "
            f"{run.failed:,} failed, in {seconds(run.duration)}. Callback: {detail}."
        )
        sys.exit(exit_code(run))
