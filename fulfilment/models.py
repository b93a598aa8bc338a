"""Fulfilment state of orders, and batches of orders as runs on the run kernel.

The fulfilment side lives here, next to (not inside) shop.Order: one `Fulfilment` row per
released order holds its warehouse, where it is in the pipeline and what the stages
produced. A `FulfilmentBatch` is a run (core.runs) whose items are its orders.
"""

from __future__ import annotations

from django.db import models
from django.urls import reverse
from django.utils import timezone

from core.runs import Run, RunItem
from shop.models import Order


class FulfilmentStatus(models.TextChoices):
    PLACED = "placed", "Placed"
    BATCHED = "batched", "Batched"
    PICKED = "picked", "Picked"
    PACKED = "packed", "Packed"
    SHIPPED = "shipped", "Shipped"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# Forward only: the one status each stage moves an order to, from the one before it.
NEXT: dict[str, str] = {
    FulfilmentStatus.PLACED: FulfilmentStatus.BATCHED,
    FulfilmentStatus.BATCHED: FulfilmentStatus.PICKED,
    FulfilmentStatus.PICKED: FulfilmentStatus.PACKED,
    FulfilmentStatus.PACKED: FulfilmentStatus.SHIPPED,
}
FINAL = frozenset({FulfilmentStatus.SHIPPED, FulfilmentStatus.FAILED, FulfilmentStatus.CANCELLED})


class Fulfilment(models.Model):
    """One order on its way out of a warehouse."""

    Status = FulfilmentStatus

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="fulfilment")
    warehouse = models.CharField(max_length=32)
    status = models.CharField(
        max_length=16, choices=FulfilmentStatus.choices, default=FulfilmentStatus.PLACED
    )
    # When it reached its status: the pipeline overview's "oldest waiting".
    status_at = models.DateTimeField(default=timezone.now)
    released_at = models.DateTimeField(null=True, blank=True)
    # A delayed aggregator message is set for the moment this order (the oldest waiting)
    # is due: further releases need not set another (fulfilment.services.batch_close_one).
    timer_set = models.BooleanField(default=False)
    batch = models.ForeignKey(
        "FulfilmentBatch", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    label = models.CharField("label file", max_length=255, blank=True)
    tracking_number = models.CharField(max_length=64, blank=True)
    shipped_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["warehouse", "status", "released_at"]),
            models.Index(fields=["batch", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.order_id} ({self.warehouse}): {self.status}"


class FulfilmentOrder(Order):
    """Orders as the fulfilment team sees them (the admin's list and release action)."""

    class Meta:
        proxy = True
        verbose_name = "order to fulfil"
        verbose_name_plural = "orders to fulfil"
        permissions = [("release_fulfilmentorder", "Can release orders for fulfilment")]


class FulfilmentBatch(Run):
    """Orders of one warehouse that go through pick, pack and ship together."""

    class Stage(models.TextChoices):
        PICK = "pick", "Picking"
        PACK = "pack", "Packing"
        SHIP = "ship", "Shipping"
        DONE = "done", "Done"

    warehouse = models.CharField(max_length=32, db_index=True)
    stage = models.CharField(max_length=8, choices=Stage.choices, default=Stage.PICK)
    # When each stage finished its last order (picking starts at `started_at`).
    picked_at = models.DateTimeField(null=True, blank=True)
    packed_at = models.DateTimeField(null=True, blank=True)
    shipped_at = models.DateTimeField(null=True, blank=True)
    # Calls made per stage (transient API errors and retried orders make more than one).
    pick_attempts = models.PositiveIntegerField(default=0)
    pack_attempts = models.PositiveIntegerField(default=0)
    ship_attempts = models.PositiveIntegerField(default=0)
    # host:pid of the packing child: which process rendered the labels (recycling).
    packed_by = models.CharField(max_length=100, blank=True)

    class Meta(Run.Meta):
        verbose_name_plural = "fulfilment batches"
        permissions = [("control_fulfilmentbatch", "Can cancel and resume fulfilment batches")]

    def __str__(self) -> str:
        return f"Batch #{self.pk} ({self.warehouse})"

    def get_absolute_url(self) -> str:
        return reverse("admin:fulfilment_fulfilmentbatch_change", args=[self.pk])

    @property
    def is_solo(self) -> bool:
        """A batch of one split-out order: its failures are the order's own."""
        return self.rerun_of_id is not None  # type: ignore[attr-defined]


class BatchOrder(RunItem):
    """One order in one batch: settled when it shipped or failed (or was split out)."""

    run = models.ForeignKey(FulfilmentBatch, on_delete=models.CASCADE, related_name="items")
    fulfilment = models.ForeignKey(Fulfilment, on_delete=models.CASCADE, related_name="items")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "fulfilment"], name="batch_order_once")
        ]
        indexes = [models.Index(fields=["run", "status"])]

    def __str__(self) -> str:
        return f"{self.fulfilment.order}: {self.error or self.get_status_display().lower()}"
