"""The fulfilment back office: orders with their fulfilment status and the release action,
batches (runs) with stage timings and their orders, and the pipeline overview."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin import RefusedActionsMixin, RunAdmin
from core.outbox import Published
from core.text import seconds
from fulfilment import services
from fulfilment.models import BatchOrder, Fulfilment, FulfilmentBatch, FulfilmentOrder
from fulfilment.workflows import orders_release_request

RELEASE_PERMISSION = "fulfilment.release_fulfilmentorder"


def _batch_link(batch_id: int | None) -> str:
    if batch_id is None:
        return "-"
    url = reverse("admin:fulfilment_fulfilmentbatch_change", args=[batch_id])
    return format_html('<a href="{}">#{}</a>', url, batch_id)


class FulfilmentStatusFilter(admin.SimpleListFilter):
    title = "fulfilment status"
    parameter_name = "fulfilment"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("unreleased", "Not released"), *Fulfilment.Status.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "unreleased":
            return queryset.filter(fulfilment__released_at__isnull=True)
        if value in Fulfilment.Status.values:
            return queryset.filter(fulfilment__status=value, fulfilment__released_at__isnull=False)
        return queryset


@admin.register(FulfilmentOrder)
class FulfilmentOrderAdmin(RefusedActionsMixin, admin.ModelAdmin):
    list_display = ("reference", "customer_email", "status", "fulfilment_status", "warehouse",
                    "released", "batch", "tracking")  # fmt: skip
    list_filter = (FulfilmentStatusFilter, "fulfilment__warehouse", "status")
    list_select_related = ("fulfilment",)
    search_fields = ("reference", "customer_email", "fulfilment__tracking_number")
    date_hierarchy = "placed_at"
    actions = ["release_for_fulfilment"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # orders are placed by the shop

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_release_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RELEASE_PERMISSION)

    def _fulfilment(self, order: FulfilmentOrder) -> Fulfilment | None:
        return getattr(order, "fulfilment", None)

    @admin.display(description="fulfilment", ordering="fulfilment__status")
    def fulfilment_status(self, order: FulfilmentOrder) -> str:
        f = self._fulfilment(order)
        if f is None or f.released_at is None:
            return "not released"
        text = f.get_status_display()
        return f"{text}: {f.error[:80]}" if f.error and f.status != f.Status.SHIPPED else text

    @admin.display(description="warehouse", ordering="fulfilment__warehouse")
    def warehouse(self, order: FulfilmentOrder) -> str:
        f = self._fulfilment(order)
        return f.warehouse if f else "-"

    @admin.display(description="released", ordering="fulfilment__released_at")
    def released(self, order: FulfilmentOrder) -> Any:
        f = self._fulfilment(order)
        return f.released_at if f and f.released_at else "-"

    @admin.display(description="batch")
    def batch(self, order: FulfilmentOrder) -> str:
        f = self._fulfilment(order)
        return _batch_link(f.batch_id if f else None)

    @admin.display(description="tracking")
    def tracking(self, order: FulfilmentOrder) -> str:
        f = self._fulfilment(order)
        return f.tracking_number if f and f.tracking_number else "-"

    @admin.action(description="Release for fulfilment", permissions=["release"])
    def release_for_fulfilment(
        self, request: HttpRequest, queryset: QuerySet[FulfilmentOrder]
    ) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        released, message = orders_release_request(order_ids=ids)
        level = messages.SUCCESS if released.released else messages.WARNING
        text = released.summary()
        if message is not None and getattr(message, "outcome", None) == Published.FAILED:
            level = messages.WARNING
            text += " They are saved and will be batched when the task broker is reachable again."
        self.message_user(request, text, level)


class BatchOrderInline(admin.TabularInline):
    model = BatchOrder
    verbose_name = "order"
    verbose_name_plural = "Orders"
    fields = ("reference", "order_status", "status", "attempts", "error", "finished_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[BatchOrder]:
        qs = super().get_queryset(request).select_related("fulfilment__order")
        return qs.order_by("fulfilment__order__reference")

    @admin.display(description="order")
    def reference(self, item: BatchOrder) -> str:
        url = reverse("admin:fulfilment_fulfilmentorder_change", args=[item.fulfilment.order_id])
        return format_html('<a href="{}">{}</a>', url, item.fulfilment.order.reference)

    @admin.display(description="fulfilment status")
    def order_status(self, item: BatchOrder) -> str:
        return item.fulfilment.get_status_display()

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("fulfilment.view_fulfilmentbatch")


@admin.register(FulfilmentBatch)
class FulfilmentBatchAdmin(RunAdmin):
    change_list_template = "admin/core/change_list_note.html"
    item_word = "order"
    list_display = ("__str__", "warehouse", "stage", "outcome", "progress", "split_from",
                    "created_at", "timings")  # fmt: skip
    list_filter = ("status", "warehouse", "stage", "trigger")
    fields = (*RunAdmin.run_fields, "warehouse", "stage", "timings", "attempts", "packed_by",
              "split_from")  # fmt: skip
    readonly_fields = fields
    inlines = [BatchOrderInline, *RunAdmin.inlines]
    live_fields = (*RunAdmin.live_fields, "stage", "timings", "attempts")

    @admin.display(description="stage timings")
    def timings(self, batch: FulfilmentBatch) -> str:
        """How long each stage took: batched -> picked -> packed -> shipped."""
        steps = [("pick", batch.started_at, batch.picked_at), ("pack", batch.picked_at,
                 batch.packed_at), ("ship", batch.packed_at, batch.shipped_at)]  # fmt: skip
        parts = [f"waited {seconds(batch.waited)}"] if batch.started_at else []
        for name, start, end in steps:
            if start and end:
                parts.append(f"{name} {seconds(end - start)}")
        return ", ".join(parts) or "-"

    @admin.display(description="calls per stage")
    def attempts(self, batch: FulfilmentBatch) -> str:
        return f"pick {batch.pick_attempts}, pack {batch.pack_attempts}, ship {batch.ship_attempts}"

    @admin.display(description="split out of")
    def split_from(self, batch: FulfilmentBatch) -> str:
        return _batch_link(batch.rerun_of_id)  # type: ignore[attr-defined]

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.pipeline_view)
        return [
            path("pipeline/", view, name="fulfilment_pipeline"),
            *super().get_urls(),
        ]

    def pipeline_view(self, request: HttpRequest) -> HttpResponse:
        """Per warehouse and stage: waiting, in progress, done in the last hour, oldest."""
        if not self.has_view_permission(request):
            return HttpResponse("You may not view fulfilment batches.", status=403)
        now = timezone.now()
        rows = [
            {
                "row": row,
                "oldest": seconds(now - row.oldest_waiting) if row.oldest_waiting else "-",
            }
            for row in services.pipeline_overview(now)
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Fulfilment pipeline",
            "rows": rows,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/fulfilment/pipeline.html", context)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        url = reverse("admin:fulfilment_pipeline")
        link = format_html('<a href="{}">Pipeline overview per warehouse and stage</a>', url)
        return super().changelist_view(request, {"page_note": link, **(extra_context or {})})
