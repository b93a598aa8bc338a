"""Imports in the admin: upload, dry run and preview (django-import-export), Confirm starts
a run; run pages with their queue and error download; the active user queues.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from import_export.admin import ImportMixin
from import_export.forms import ImportForm

from core.admin import RunAdmin
from core.outbox import Published
from core.runs import UNFINISHED
from core.text import plural, seconds
from imports import fair, services, workflows
from imports.models import ImportQueue, ImportRun
from imports.parsing import FORMULA_STARTS, BadFile, CatalogueCSV, too_big_message
from imports.resources import CatalogueResource
from imports.storage import PendingImportStorage, keep_confirmed
from imports.uploads import refused_size

IMPORT_PERMISSION = "imports.add_importrun"


class CatalogueImportForm(ImportForm):
    def clean_import_file(self) -> Any:
        from django.conf import settings

        upload = self.cleaned_data["import_file"]
        if upload.size > settings.IMPORTS_MAX_UPLOAD_BYTES:
            raise forms.ValidationError(too_big_message(upload.size))
        return upload


def started_message(run: ImportRun, outbox: Any) -> tuple[str, int]:
    link = format_html('<a href="{}">import #{}</a>', run.get_absolute_url(), run.pk)
    what = (
        f"{plural(run.rows_total - len(run.rejected_rows), 'row')} in {plural(run.total, 'chunk')}"
    )
    if getattr(outbox, "outcome", None) == Published.FAILED:
        return (
            format_html(
                "{} is saved and will start when the task broker is reachable again ({}).",
                link, what,
            ),
            messages.WARNING,
        )  # fmt: skip
    return format_html("Started {} for {} on queue {}.", link, what, run.queue), messages.SUCCESS


def csv_cell(value: Any) -> str:
    """OWASP: a cell a spreadsheet would run as a formula is written as text."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


@admin.register(ImportRun)
class ImportRunAdmin(ImportMixin, RunAdmin):
    item_word = "chunk"
    resource_classes = [CatalogueResource]
    formats = [CatalogueCSV]
    import_form_class = CatalogueImportForm
    tmp_storage_class = PendingImportStorage
    import_template_name = "admin/imports/importrun/import.html"
    list_display = ("__str__", "outcome", "progress", "file_name", "queue", "rows", "requested_by",
                    "created_at", "duration", "errors_link")  # fmt: skip
    list_filter = ("status", "trigger", "queue")
    search_fields = ("=id", "file_name", "requested_by__username")
    fields = ("file_name", "queue", "rows", "price_changes", "errors_link", *RunAdmin.run_fields,
              "chunk_size")  # fmt: skip
    readonly_fields = fields

    # --- permissions and visibility -------------------------------------------------------
    def has_import_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(IMPORT_PERMISSION)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ImportRun]:
        qs = super().get_queryset(request).select_related("requested_by")
        if request.user.has_perm("imports.view_all_imports"):
            return qs
        return qs.filter(requested_by=request.user)

    # --- columns --------------------------------------------------------------------------
    @admin.display(description="Rows")
    def rows(self, run: ImportRun) -> str:
        return (
            f"{run.rows_total:,} in file: {run.rows_created:,} new, {run.rows_updated:,} "
            f"updated, {run.rows_unchanged:,} unchanged, {run.rows_failed:,} refused"
        )

    @admin.display(description="Row errors")
    def errors_link(self, run: ImportRun) -> str:
        if not run.rows_failed:
            return "-"
        url = reverse("admin:imports_importrun_errors", args=[run.pk])
        return format_html('<a href="{}">{} (CSV)</a>', url, plural(run.rows_failed, "row"))

    # --- the error file -------------------------------------------------------------------
    def get_urls(self) -> list[Any]:
        errors = path(
            "<int:pk>/errors.csv",
            self.admin_site.admin_view(self.errors_view),
            name="imports_importrun_errors",
        )
        return [errors, *super().get_urls()]

    def errors_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """Per-row errors as CSV: the requester, or staff who may see every import."""
        run = get_object_or_404(ImportRun, pk=pk)
        if not run.can_be_seen_by(request.user):
            raise PermissionDenied("You may only download the errors of your own imports.")
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["line", "sku", "error"])
        for line, sku, message in services.import_run_errors(run):
            writer.writerow([line, csv_cell(sku), csv_cell(message)])
        response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="import-{run.pk}-errors.csv"'
        return response

    # --- upload and dry run (django-import-export), then Confirm ---------------------------
    def add_data_read_fail_error_to_form(self, form: Any, e: Exception) -> None:
        if isinstance(e, BadFile):
            form.add_error("import_file", str(e))
        else:
            super().add_data_read_fail_error_to_form(form, e)

    def import_action(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        response = super().import_action(request, **kwargs)
        context = getattr(response, "context_data", None) or {}
        form = context.get("form")
        size = refused_size(request)
        if size is not None and form is not None:
            form.errors["import_file"] = form.error_class([too_big_message(size)])
        result = context.get("result")
        # Rows with errors do not block the others: Confirm applies the valid rows and the
        # refused ones are listed in the run's error file.
        if (
            result is not None
            and "confirm_form" not in context
            and not result.has_errors()
            and result.has_validation_errors()
            and len(result.valid_rows())
        ):
            context["confirm_form"] = self.create_confirm_form(request, import_form=form)
            context["partial"] = True
        return response

    def process_import(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        try:
            return super().process_import(request, **kwargs)
        except (BadFile, FileNotFoundError, ValueError) as exc:
            text = (
                "This upload was already confirmed or is gone; upload the file again."
                if isinstance(exc, FileNotFoundError)
                else f"Nothing was imported: {exc}"
            )
            self.message_user(request, text, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:imports_importrun_import"))

    def process_dataset(self, dataset: Any, form: Any, request: HttpRequest, **kwargs: Any) -> Any:
        """Confirm: validate again (the catalogue may have moved), then start the run."""
        pending = PendingImportStorage(name=form.cleaned_data["import_file_name"])
        data = pending.read()
        validation = services.catalogue_validate(dataset, user=request.user)

        def keep_file(run: ImportRun) -> None:
            run.stored_file = keep_confirmed(data, run.pk)
            run.save(update_fields=["stored_file"])

        return workflows.import_run_request(
            validation=validation,
            file_name=form.cleaned_data["original_file_name"],
            trigger=ImportRun.Trigger.ADMIN,
            requested_by=request.user,
            after_create=keep_file,
        )

    def process_result(self, result: Any, request: HttpRequest) -> HttpResponse:
        run, outbox = result
        text, level = started_message(run, outbox)
        self.message_user(request, text, level)
        return HttpResponseRedirect(run.get_absolute_url())


@admin.register(ImportQueue)
class ImportQueueAdmin(admin.ModelAdmin):
    """The user queues the imports nodes consume now: depth, consumers and age, live."""

    change_list_template = "admin/core/change_list_note.html"

    list_display = ("name", "kind", "user", "state", "depth", "consumer_nodes", "age", "idle",
                    "runs_in_flight")  # fmt: skip
    list_filter = ("kind", "state")
    readonly_fields = ("name", "kind", "user", "state", "created_at", "last_used_at",
                       "consumers", "checked_at")  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the reconciler removes queues, once drained and idle

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        """Ask the nodes what they consume now, so the page shows it, not an old answer."""
        try:
            fair._record_consumers(fair.pool_nodes())
            note = "Consumers as the imports nodes answered just now."
        except Exception as exc:  # the broker is down: show what we knew
            note = f"Could not ask the imports nodes ({exc}); consumers as last seen."
        page_note = (
            f"{note} Idle queues are removed after {seconds_text()} by the reconciler; at "
            "most FAIR_MAX_QUEUES user queues, then shared overflow queues."
        )
        return super().changelist_view(request, {"page_note": page_note, **(extra_context or {})})

    @admin.display(description="messages waiting")
    def depth(self, row: ImportQueue) -> str:
        try:
            return f"{fair.broker_depth(row.name):,}"
        except Exception as exc:
            return f"? ({exc.__class__.__name__})"

    @admin.display(description="consumers")
    def consumer_nodes(self, row: ImportQueue) -> str:
        nodes = ", ".join(n.split("@")[0] for n in row.consumers) or "none"
        return f"{len(row.consumers)}: {nodes}"

    @admin.display(description="age", ordering="created_at")
    def age(self, row: ImportQueue) -> str:
        return seconds(timezone.now() - row.created_at)

    @admin.display(description="idle for", ordering="last_used_at")
    def idle(self, row: ImportQueue) -> str:
        return seconds(timezone.now() - row.last_used_at)

    @admin.display(description="imports in flight")
    def runs_in_flight(self, row: ImportQueue) -> int:
        return ImportRun.objects.filter(queue=row.name, status__in=UNFINISHED).count()


def seconds_text() -> str:
    from datetime import timedelta

    from django.conf import settings

    return seconds(timedelta(seconds=settings.FAIR_QUEUE_IDLE_SECONDS))
