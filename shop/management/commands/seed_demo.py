"""Load the demo catalogue the supplier stand-in knows, plus some orders."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from shop.demo import seed


class Command(BaseCommand):
    help = "Create demo products (known to `supplier_stub`) and demo orders. Idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--products", type=int, default=200)
        parser.add_argument("--orders", type=int, default=300)

    def handle(self, *args: Any, **options: Any) -> None:
        products, orders = seed(options["products"], options["orders"])
        self.stdout.write(f"Demo data: {products} products, {orders} new orders.")
