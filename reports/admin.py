"""Report runs in the admin: request one (type, then parameters), follow it, download it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from reports import registry, workflows
from reports.models import ReportRun


class ReportTypeForm(forms.Form):
    report_type = forms.ChoiceField(label="Report type", choices=())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["report_type"].choices = [("", "---------"), *registry.choices()]


def _can_see_all(request: HttpRequest) -> bool:
    return request.user.has_perm("reports.view_all_reports")


@admin.register(ReportRun)
class ReportRunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "type_label",
        "status",
        "progress",
        "queue",
        "requested_by",
        "created_at",
        "waited",
        "duration",
        "downloads",
    )
    list_filter = ("status", "report_type", "trigger")
    search_fields = ("=id", "requested_by__username", "error")
    date_hierarchy = "created_at"
    actions = ["rerun"]
    fields = (
        "report_type",
        "params",
        "status",
        "progress",
        "queue",
        "trigger",
        "requested_by",
        "rerun_of",
        "created_at",
        "started_at",
        "finished_at",
        "waited",
        "duration",
        "error",
        "downloads",
        "notified_at",
    )
    readonly_fields = fields

    # --- list ------------------------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[ReportRun]:
        """Staff without `view_all_reports` see only their own runs."""
        qs = super().get_queryset(request).select_related("requested_by")
        return qs if _can_see_all(request) else qs.filter(requested_by=request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # runs are records; re-run instead of editing

    @admin.display(description="Type", ordering="report_type")
    def type_label(self, run: ReportRun) -> str:
        try:
            return registry.get(run.report_type).label
        except registry.UnknownReportType:
            return run.report_type

    @admin.display(description="Progress")
    def progress(self, run: ReportRun) -> str:
        return f"{run.parts_done}/{run.parts_total}"

    @admin.display(description="Waited")
    def waited(self, run: ReportRun) -> str:
        return _seconds(run.waited)

    @admin.display(description="Took")
    def duration(self, run: ReportRun) -> str:
        return _seconds(run.duration)

    @admin.display(description="Files / error")
    def downloads(self, run: ReportRun) -> str:
        if run.status == ReportRun.Status.FAILED:
            return format_html('<span title="{}">failed: {}</span>', run.error, run.error[:120])
        links = [
            (run.download_path(k), k.upper()) for k in ReportRun.FILE_KINDS if run.file_name(k)
        ]
        return format_html_join(" ", '<a href="{}">{}</a>', links) if links else "-"

    # --- re-run ----------------------------------------------------------------------------
    @admin.action(description="Re-run selected failed reports", permissions=["add"])
    def rerun(self, request: HttpRequest, queryset: QuerySet[ReportRun]) -> None:
        started, skipped = [], 0
        for run in queryset:
            if run.status != ReportRun.Status.FAILED:
                skipped += 1
                continue
            try:
                started.append(workflows.report_run_rerun(run=run, requested_by=request.user))
            except (ValueError, registry.UnknownReportType) as exc:
                self.message_user(request, f"Run #{run.pk} cannot be re-run: {exc}", messages.ERROR)
        if started:
            ids = ", ".join(f"#{r.pk}" for r in started)
            self.message_user(request, f"Queued again as {ids}.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"{skipped} run(s) skipped: only failed runs are re-run.", messages.WARNING
            )

    # --- request ---------------------------------------------------------------------------
    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        """Step 1: pick a type; step 2: its parameters. Bad input queues nothing."""
        if not self.has_add_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        data = request.POST if request.method == "POST" else (request.GET or None)
        type_form = ReportTypeForm(data)
        params_form = None
        kind = None
        if type_form.is_valid():
            kind = registry.get(type_form.cleaned_data["report_type"])
            if request.method == "POST" and "_request" in request.POST:
                params_form = kind.form(request.POST)
                if params_form.is_valid():
                    params = kind.clean_params(request.POST)
                    run = workflows.report_run_request(
                        report_type=kind.identifier,
                        params=params,
                        requested_by=request.user,
                        trigger=ReportRun.Trigger.ADMIN,
                    )
                    self.message_user(
                        request,
                        f"{kind.label} report #{run.pk} queued on {kind.queue}. You will get "
                        "an email when it is ready.",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(reverse("admin:reports_reportrun_changelist"))
            else:
                params_form = kind.form()
        context = {
            **self.admin_site.each_context(request),
            "title": f"Request a report{f': {kind.label}' if kind else ''}",
            "opts": self.model._meta,
            "type_form": type_form,
            "params_form": params_form,
            "kind": kind,
            "types": registry.all_types(),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/reports/reportrun/request.html", context)


def _seconds(value: Any) -> str:
    return f"{value.total_seconds():.1f} s" if value is not None else "-"
