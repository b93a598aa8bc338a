"""Catalogue, orders, and the supplier refresh runs."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.urls import reverse


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


class Order(models.Model):
    class Status(models.TextChoices):
        PLACED = "placed"
        PAID = "paid"
        SHIPPED = "shipped"
        CANCELLED = "cancelled"

    reference = models.CharField(max_length=32, unique=True)
    customer_email = models.EmailField()
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
        return f"{self.quantity} x {self.product_id}"

    @property
    def total(self) -> Decimal:
        return self.unit_price * self.quantity


class RefreshRun(models.Model):
    """One refresh of a set of products: pending -> running -> succeeded/failed/callback_failed."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CALLBACK_FAILED = "callback_failed"

    class Trigger(models.TextChoices):
        ADMIN = "admin"
        COMMAND = "command"
        RETRY = "retry"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CALLBACK_FAILED)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)
    total = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    chunk_size = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The status callback: what happened when we told STATUS_CALLBACK_URL.
    callback_status = models.CharField(max_length=255, blank=True)
    callback_sent_at = models.DateTimeField(null=True, blank=True)
    # Who may POST right now: a duplicate callback delivery waits out the lease instead of
    # sending a second request; a crashed sender's lease expires and a redelivery resends.
    callback_lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Refresh run #{self.pk} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("admin:shop_refreshrun_change", args=[self.pk])

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class RefreshItem(models.Model):
    """One product in one run: its outcome, so failures can be shown and retried."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    run = models.ForeignKey(RefreshRun, on_delete=models.CASCADE, related_name="items")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "product"], name="refresh_item_once")]
        indexes = [models.Index(fields=["run", "status"])]

    def __str__(self) -> str:
        return f"run {self.run_id} product {self.product_id}: {self.status}"
