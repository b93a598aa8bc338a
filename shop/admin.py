"""The back office: products (with the refresh action), orders, and refresh runs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from shop.models import Order, OrderLine, PriceChange, Product, RefreshItem, RefreshRun
from shop.workflows import refresh_retry_failed, refresh_start

REFRESH_PERMISSION = "shop.refresh_product"


def _run_link(run: RefreshRun) -> str:
    return format_html('<a href="{}">refresh run #{}</a>', run.get_absolute_url(), run.pk)


def progress_bar(run: RefreshRun) -> str:
    total = max(run.total, 1)
    ok, bad = 100 * run.succeeded / total, 100 * run.failed / total
    return format_html(
        '<div title="{} done, {} failed, {} total" style="width:12em;height:0.9em;'
        'background:#eee;display:flex;border-radius:3px;overflow:hidden">'
        '<div style="width:{}%;background:#3a3"></div><div style="width:{}%;background:#c33">'
        "</div></div>{} / {} done, {} failed",
        run.succeeded, run.failed, run.total, f"{ok:.1f}", f"{bad:.1f}",
        run.done, run.total, run.failed,
    )  # fmt: skip


class RefreshPermissionMixin:
    def has_refresh_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REFRESH_PERMISSION)


@admin.register(Product)
class ProductAdmin(RefreshPermissionMixin, admin.ModelAdmin):
    list_display = ("sku", "name", "price", "currency", "stock", "last_refreshed_at", "error")
    search_fields = ("sku", "name")
    list_filter = ("currency",)
    readonly_fields = ("supplier_details", "last_refreshed_at", "last_error")
    actions = ["refresh_from_supplier"]

    @admin.display(description="last error")
    def error(self, product: Product) -> str:
        return product.last_error[:80]

    @admin.action(description="Refresh details from supplier", permissions=["refresh"])
    def refresh_from_supplier(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        run = refresh_start(product_ids=ids, trigger=RefreshRun.Trigger.ADMIN, user=request.user)
        self.message_user(
            request,
            format_html("Started {} for {} products.", _run_link(run), len(ids)),
            messages.SUCCESS,
        )


class FailedItemInline(admin.TabularInline):
    model = RefreshItem
    verbose_name_plural = "Failed products"
    fields = ("product", "error", "attempts", "finished_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[RefreshItem]:
        return super().get_queryset(request).filter(status=RefreshItem.Status.FAILED)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Items are part of the run: whoever may view the run sees its failures.
        return request.user.has_perm("shop.view_refreshrun")


@admin.register(RefreshRun)
class RefreshRunAdmin(RefreshPermissionMixin, admin.ModelAdmin):
    list_display = ("__str__", "status", "progress", "trigger", "requested_by", "created_at",
                    "duration", "callback_status")  # fmt: skip
    list_filter = ("status", "trigger")
    readonly_fields = (
        "status", "progress", "trigger", "requested_by", "retry_of", "total", "succeeded",
        "failed", "chunk_size", "created_at", "started_at", "finished_at", "duration",
        "callback_status", "callback_sent_at",
    )  # fmt: skip
    exclude = ("callback_lease_until",)
    inlines = [FailedItemInline]
    actions = ["retry_failed"]

    @admin.display(description="progress")
    def progress(self, run: RefreshRun) -> str:
        return progress_bar(run)

    @admin.display(description="duration")
    def duration(self, run: RefreshRun) -> str:
        if not (run.started_at and run.finished_at):
            return "-"
        return f"{(run.finished_at - run.started_at).total_seconds():.1f} s"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Retry the failed products as a new run", permissions=["refresh"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[RefreshRun]) -> None:
        for run in queryset:
            if not run.is_finished:
                self.message_user(request, f"{run} is still running.", messages.WARNING)
                continue
            new = refresh_retry_failed(run=run, user=request.user)
            if new is None:
                self.message_user(request, f"{run} has no failed products.", messages.INFO)
            else:
                self.message_user(
                    request,
                    format_html(
                        "Started {} for {} failed products of run #{}.",
                        _run_link(new),
                        new.total,
                        run.pk,
                    ),
                    messages.SUCCESS,
                )


@admin.register(PriceChange)
class PriceChangeAdmin(admin.ModelAdmin):
    list_display = ("product", "old_price", "new_price", "changed_at", "run")
    list_select_related = ("product",)
    date_hierarchy = "changed_at"


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    raw_id_fields = ("product",)


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("reference", "customer_email", "status", "placed_at")
    list_filter = ("status",)
    search_fields = ("reference", "customer_email")
    date_hierarchy = "placed_at"
    inlines = [OrderLineInline]
