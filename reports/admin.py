"""Report runs in the admin: request one (type, then parameters), follow it, download it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from core.admin import RunAdmin
from core.outbox import Published
from notifications.models import Notification
from notifications.services import has_email
from reports import registry, services, workflows
from reports.models import ReportRun


class ReportTypeForm(forms.Form):
    report_type = forms.ChoiceField(label="Report type", choices=())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["report_type"].choices = [("", "---------"), *registry.choices()]


def _can_see_all(request: HttpRequest) -> bool:
    return request.user.has_perm("reports.view_all_reports")


@admin.register(ReportRun)
class ReportRunAdmin(RunAdmin):
    item_word = "part"
    allow_add = True  # "Add" is the request form (add_view below)
    live_fields = (*RunAdmin.live_fields, "downloads")
    list_display = (
        "id",
        "downloads",
        "outcome",
        "type_label",
        "parameters",
        "requested_by",
        "created_at",
        "waited",
        "duration",
    )
    list_filter = ("status", "report_type", "trigger")
    search_fields = ("=id", "requested_by__username", "error")
    actions = ["rerun", *RunAdmin.actions]
    fields = ("type_label", "parameters", "downloads", *RunAdmin.run_fields, "queue", "notified")
    readonly_fields = fields

    # --- list ------------------------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[ReportRun]:
        """Staff without `view_all_reports` see only their own runs."""
        qs = super().get_queryset(request).select_related("requested_by")
        return qs if _can_see_all(request) else qs.filter(requested_by=request.user)

    @admin.display(description="Type", ordering="report_type")
    def type_label(self, run: ReportRun) -> str:
        try:
            return registry.get(run.report_type).label
        except registry.UnknownReportType:
            return run.report_type

    @admin.display(description="Parameters")
    def parameters(self, run: ReportRun) -> str:
        try:
            kind = registry.get(run.report_type)
            return kind.describe(kind.parse_params(run.params))
        except (registry.UnknownReportType, ValueError):
            return ", ".join(f"{k}: {v}" for k, v in run.params.items())

    @admin.display(description="Files / error")
    def downloads(self, run: ReportRun) -> str:
        if run.status == ReportRun.Status.FAILED:
            return format_html('<span title="{}">failed: {}</span>', run.error, run.error[:120])
        links = [
            (run.download_path(k), k.upper()) for k in ReportRun.FILE_KINDS if run.file_name(k)
        ]
        return format_html_join(" ", '<a href="{}">{}</a>', links) if links else "-"

    @admin.display(description="Notified")
    def notified(self, run: ReportRun) -> str:
        """The "report ready" email as the notifications app recorded it."""
        notification = services.report_run_notification(run)
        if notification is None:
            return "-"
        if notification.status == Notification.Status.SENT:
            when = timezone.localtime(notification.sent_at)
            return f"emailed to {notification.recipient} at {when:%Y-%m-%d %H:%M:%S}"
        detail = f": {notification.error}" if notification.error else ""
        return f"{notification.get_status_display().lower()}{detail}"

    # --- re-run ----------------------------------------------------------------------------
    @admin.action(description="Re-run selected failed or cancelled reports", permissions=["add"])
    def rerun(self, request: HttpRequest, queryset: QuerySet[ReportRun]) -> None:
        started, skipped = [], 0
        for run in queryset:
            if run.status not in (ReportRun.Status.FAILED, ReportRun.Status.CANCELLED):
                skipped += 1
                continue
            try:
                new, outbox = workflows.report_run_rerun(run=run, requested_by=request.user)
            except (ValueError, registry.UnknownReportType) as exc:
                self.message_user(request, f"Run #{run.pk} cannot be re-run: {exc}", messages.ERROR)
                continue
            started.append(new)
            if getattr(outbox, "outcome", None) == Published.FAILED:
                self.message_user(request, waiting_message(new), messages.WARNING)
        if started:
            ids = ", ".join(f"#{r.pk}" for r in started)
            self.message_user(request, f"Queued again as {ids}.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"{skipped} run(s) skipped: only failed or cancelled runs are re-run.",
                messages.WARNING,
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
                    run, outbox = workflows.report_run_request(
                        report_type=kind.identifier,
                        params=params,
                        requested_by=request.user,
                        trigger=ReportRun.Trigger.ADMIN,
                    )
                    if getattr(outbox, "outcome", None) == Published.FAILED:
                        self.message_user(request, waiting_message(run), messages.WARNING)
                    else:
                        self.message_user(
                            request, queued_message(request, kind, run), messages.SUCCESS
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


def queued_message(request: HttpRequest, kind: registry.ReportType, run: ReportRun) -> str:
    """Promise an email only to someone we can email; tell the others where to look."""
    text = f"{kind.label} report #{run.pk} queued on {kind.queue}."
    if has_email(request.user):
        return f"{text} You will get an email at {request.user.email} when it is ready."
    return (
        f"{text} No email will be sent: your account has no email address. Its files "
        "appear in this list when it is ready."
    )


def waiting_message(run: ReportRun) -> str:
    return f"Report #{run.pk} is saved and will start when the task broker is reachable again."
