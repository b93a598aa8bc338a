"""Load the demo catalogue the supplier stand-in knows, plus some orders."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from devtools.demo import seed


class Command(BaseCommand):
    help = "Create demo products (known to `supplier_stub`), customers and orders. Idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--products", type=int, default=200)
        parser.add_argument("--orders", type=int, default=300)
        parser.add_argument("--customers", type=int, default=3000)

    def handle(self, *args: Any, **options: Any) -> None:
        products, orders = seed(
            options["products"], options["orders"], customers=options["customers"]
        )
        self.stdout.write(
            f"Demo data: {products} products, {options['customers']} customers, "
            f"{orders} new orders."
        )
