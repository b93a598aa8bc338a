"""The back office: products (with the refresh action), orders, and refresh runs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from core.admin import RefusedActionsMixin, RunAdmin
from core.models import OutboxMessage
from core.outbox import Published
from core.text import plural
from shop.models import Customer, Order, OrderLine, PriceChange, Product, RefreshItem, RefreshRun
from shop.workflows import refresh_run_request, refresh_run_rerun_failed

REFRESH_PERMISSION = "shop.refresh_product"


def _run_link(run: RefreshRun) -> str:
    return format_html('<a href="{}">refresh run #{}</a>', run.get_absolute_url(), run.pk)


def started_message(run: RefreshRun, outbox: OutboxMessage, what: str) -> tuple[str, int]:
    """What staff read after starting a run: started, or saved and waiting for the broker."""
    if getattr(outbox, "outcome", None) == Published.FAILED:
        return (
            format_html(
                "{} is saved and will start when the task broker is reachable again ({}).",
                _run_link(run),
                what,
            ),
            messages.WARNING,
        )
    return format_html("Started {} for {}.", _run_link(run), what), messages.SUCCESS


class RefreshPermissionMixin:
    def has_refresh_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REFRESH_PERMISSION)


@admin.register(Product)
class ProductAdmin(RefreshPermissionMixin, RefusedActionsMixin, admin.ModelAdmin):
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
        run, outbox = refresh_run_request(
            product_ids=ids, trigger=RefreshRun.Trigger.ADMIN, requested_by=request.user
        )
        text, level = started_message(run, outbox, plural(len(ids), "product"))
        self.message_user(request, text, level)


class FailedItemInline(admin.TabularInline):
    model = RefreshItem
    verbose_name = "failed product"
    verbose_name_plural = "Failed products"
    fields = ("product_link", "error", "attempts", "finished_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[RefreshItem]:
        qs = super().get_queryset(request).select_related("product")
        return qs.filter(status=RefreshItem.Status.FAILED).order_by("product__sku")

    @admin.display(description="product")
    def product_link(self, item: RefreshItem) -> str:
        url = reverse("admin:shop_product_change", args=[item.product_id])
        return format_html('<a href="{}">{}</a>', url, item.product.sku)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Items are part of the run: whoever may view the run sees its failures.
        return request.user.has_perm("shop.view_refreshrun")


@admin.register(RefreshRun)
class RefreshRunAdmin(RefreshPermissionMixin, RunAdmin):
    item_word = "product"
    list_display = ("__str__", "outcome", "progress", "callback", "trigger", "requested_by",
                    "created_at", "duration")  # fmt: skip
    list_filter = ("status", "trigger", "callback_state")
    fields = (*RunAdmin.run_fields, "chunk_size", "callback", "callback_sent_at")
    readonly_fields = fields
    inlines = [FailedItemInline, *RunAdmin.inlines]
    live_fields = (*RunAdmin.live_fields, "callback")
    actions = ["retry_failed", *RunAdmin.actions]

    @admin.display(description="status callback", ordering="callback_state")
    def callback(self, run: RefreshRun) -> str:
        if not run.callback_state:
            return "-"
        return f"{run.get_callback_state_display()}: {run.callback_detail}"

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        """No empty "Failed products" table on a run where nothing failed."""
        inlines = super().get_inline_instances(request, obj)
        if obj is None or not obj.failed:
            inlines = [i for i in inlines if not isinstance(i, FailedItemInline)]
        return inlines

    @admin.action(description="Retry the failed products as a new run", permissions=["refresh"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[RefreshRun]) -> None:
        for run in queryset:
            if not run.is_finished:
                self.message_user(request, f"{run} has not finished yet.", messages.WARNING)
                continue
            started = refresh_run_rerun_failed(run=run, requested_by=request.user)
            if started is None:
                self.message_user(request, f"{run} has no failed products.", messages.INFO)
                continue
            new, outbox = started
            what = f"{plural(new.total, 'failed product')} of run #{run.pk}"
            text, level = started_message(new, outbox, what)
            self.message_user(request, text, level)


@admin.register(PriceChange)
class PriceChangeAdmin(admin.ModelAdmin):
    """The price history refreshes record: never added or edited by hand, so it stays what
    the supplier said. Deleting stays a permission: deleting a product deletes its history."""

    list_display = ("product", "old_price", "new_price", "changed_at", "run")
    list_select_related = ("product",)
    date_hierarchy = "changed_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    raw_id_fields = ("product",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[OrderLine]:
        return super().get_queryset(request).select_related("product")  # each row's label


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ("email", "name", "marketing_opt_in", "orders_link", "created_at")
    list_filter = ("marketing_opt_in",)
    search_fields = ("email", "name")
    date_hierarchy = "created_at"

    @admin.display(description="orders")
    def orders_link(self, customer: Customer) -> str:
        url = reverse("admin:shop_order_changelist") + f"?customer__id__exact={customer.pk}"
        return format_html('<a href="{}">orders</a>', url)


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("reference", "customer", "customer_email", "status", "placed_at")
    list_filter = ("status",)
    list_select_related = ("customer",)
    search_fields = ("reference", "customer_email", "customer__name")
    date_hierarchy = "placed_at"
    autocomplete_fields = ("customer",)
    inlines = [OrderLineInline]
