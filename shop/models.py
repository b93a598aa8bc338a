"""Catalogue, orders, and the supplier refresh runs."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.urls import reverse
from django.utils import timezone

from core.runs import Run, RunItem


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0.00"))
    currency = models.CharField(max_length=3, default="EUR")
    stock = models.IntegerField(default=0)
    # What the supplier sent, extra keys included, so nothing they tell us is lost.
    supplier_details = models.JSONField(default=dict, blank=True)
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["sku"]
        permissions = [("refresh_product", "Can refresh products from the supplier")]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class PriceChange(models.Model):
    """A price the supplier changed, recorded by a refresh (the price-changes report)."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="price_changes")
    old_price = models.DecimalField(max_digits=12, decimal_places=2)
    new_price = models.DecimalField(max_digits=12, decimal_places=2)
    changed_at = models.DateTimeField(db_index=True)
    run = models.ForeignKey("RefreshRun", null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-changed_at"]

    def __str__(self) -> str:
        return f"{self.product_id}: {self.old_price} -> {self.new_price}"


class Customer(models.Model):
    """Someone who ordered: their address and whether they want marketing email."""

    email = models.EmailField(unique=True)
    name = models.CharField(max_length=200, blank=True)
    marketing_opt_in = models.BooleanField(
        "marketing email", default=False, help_text="Agreed to receive campaigns."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["email"]
        indexes = [models.Index(fields=["marketing_opt_in", "id"])]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


class Order(models.Model):
    class Status(models.TextChoices):
        PLACED = "placed"
        PAID = "paid"
        SHIPPED = "shipped"
        CANCELLED = "cancelled"

    reference = models.CharField(max_length=32, unique=True)
    # The address the order was placed with, kept as it was then; the customer may change.
    customer_email = models.EmailField()
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="orders"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PLACED)
    placed_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-placed_at"]

    def __str__(self) -> str:
        return self.reference


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="order_lines")
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)

    def __str__(self) -> str:
        """What the order's page shows above the line: the product, not its database id."""
        return f"{self.quantity} x {self.product.sku}"

    @property
    def total(self) -> Decimal:
        return self.unit_price * self.quantity


class RefreshRun(Run):
    """One refresh of a set of products, on the run kernel (core.runs).

    Settled means finished *and* the status callback is no longer due: delivered, failed
    for good, or not configured.
    """

    class Callback(models.TextChoices):
        NONE = "", "-"
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Not configured"

    chunk_size = models.PositiveIntegerField(default=1)
    # The status callback: due once the run finishes, whatever its outcome.
    callback_state = models.CharField(
        max_length=16, choices=Callback.choices, default=Callback.NONE, blank=True
    )
    callback_detail = models.CharField(max_length=255, blank=True)
    callback_attempts = models.PositiveIntegerField(default=0)
    # When the next attempt is due (a transient failure scheduled a retry).
    callback_next_at = models.DateTimeField(null=True, blank=True)
    callback_sent_at = models.DateTimeField(null=True, blank=True)
    # Who may POST right now: a duplicate delivery of the notify task waits out the lease
    # instead of sending a second request; a crashed sender's lease expires and the
    # reconciler sends it again (same Idempotency-Key).
    callback_lease_until = models.DateTimeField(null=True, blank=True)

    class Meta(Run.Meta):
        permissions = [("control_refreshrun", "Can cancel and resume refresh runs")]

    def __str__(self) -> str:
        return f"Refresh run #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("admin:shop_refreshrun_change", args=[self.pk])

    @property
    def is_settled(self) -> bool:
        return self.is_finished and self.callback_state not in (
            self.Callback.NONE,
            self.Callback.PENDING,
        )


class RefreshItem(RunItem):
    """One product in one run: its outcome, so failures can be shown and retried."""

    # Every query of items names its run, which refresh_item_once's index leads with: an
    # index of its own on `run` (or on run and status, as once) would only cost the chunks'
    # writes, and with nothing indexed changing, PostgreSQL updates items in place (HOT;
    # see migration 0005's fill factor).
    run = models.ForeignKey(
        RefreshRun, on_delete=models.CASCADE, related_name="items", db_index=False
    )
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "product"], name="refresh_item_once")]

    def __str__(self) -> str:
        """What the run's page shows for this product: its SKU and what happened."""
        return f"{self.product.sku}: {self.error or self.get_status_display().lower()}"
