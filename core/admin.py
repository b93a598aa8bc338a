"""Admin building blocks every run page shares, and the kernel's own rows.

`RunAdmin` gives each workflow's run admin the same progress bar, outcome in plain words,
publishing state, interventions (events) and the permission-gated Cancel and Resume
actions. Dead letters and the outbox are listed here too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.contenttypes.admin import GenericTabularInline
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django_celery_results import admin as celery_results_admin

from core import deadletters, reconciler, runs
from core.models import DeadLetter, OutboxMessage, RunEvent
from core.outbox import outbox_waiting
from core.text import plural, seconds


def outcome_text(run: runs.Run, item: str = "item") -> str:
    """The run's state in plain words: 'Completed with 2 errors', 'Running: 40 / 200'."""
    status = run.status
    if status == runs.RunStatus.PENDING:
        return "Waiting to start"
    if status == runs.RunStatus.RUNNING:
        return f"Running: {run.done:,} / {run.total:,} {'done' if run.total else ''}".strip()
    if status == runs.RunStatus.SUCCEEDED:
        return f"Succeeded: {plural(run.succeeded, item)}"
    if status == runs.RunStatus.COMPLETED_WITH_ERRORS:
        return f"Completed with {plural(run.failed, 'error')}"
    if status == runs.RunStatus.FAILED:
        return f"Failed: {plural(run.failed, item)} failed" if run.failed else "Failed"
    return "Cancelled"


def progress_bar(run: runs.Run) -> str:
    """Succeeded in green, failed in red, the rest grey; the numbers beside it."""
    total = max(run.total, 1)
    ok, bad = 100 * run.succeeded / total, 100 * run.failed / total
    failed = f", {run.failed:,} failed" if run.failed else ""
    return format_html(
        '<div class="run-progress" title="{} succeeded, {} failed, {} in all" '
        'style="width:12em;height:0.9em;background:#ddd;display:inline-flex;'
        'border-radius:3px;overflow:hidden;vertical-align:middle">'
        '<div class="ok" style="width:{}%;background:#3a3"></div>'
        '<div class="bad" style="width:{}%;background:#c33"></div></div> '
        '<span class="run-progress-text">{} / {} done{}</span>',
        run.succeeded, run.failed, run.total, f"{ok:.1f}", f"{bad:.1f}",
        f"{run.done:,}", f"{run.total:,}", failed,
    )  # fmt: skip


class RefusedActionsMixin:
    """A POSTed action the user may not run says so, and that nothing was started.

    Django ignores such a POST silently when the user has no action at all (a forged
    request, or a permission removed while the page was open), which reads as "done".
    """

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        name = request.POST.get("action") if request.method == "POST" else None
        if name and name not in self.get_actions(request):  # type: ignore[attr-defined]
            func = getattr(self, name, None)
            label = getattr(func, "short_description", None) or name.replace("_", " ")
            self.message_user(  # type: ignore[attr-defined]
                request,
                f"You do not have permission to “{label}”: nothing was started. Ask "
                f"{settings.SHOP_SUPPORT_CONTACT} for it.",
                messages.ERROR,
            )
            return HttpResponseRedirect(request.get_full_path())
        return super().changelist_view(request, extra_context)  # type: ignore[misc]


class RunEventInline(GenericTabularInline):
    model = RunEvent
    verbose_name = "intervention"
    verbose_name_plural = "Interventions (reconciler, cancel, resume, broker outages)"
    fields = ("at", "kind", "message", "actor")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # part of the run: whoever may view the run sees them


class RunAdmin(RefusedActionsMixin, admin.ModelAdmin):
    """Read-only run pages with Cancel and Resume for staff holding `control_<model>`."""

    item_word = "item"
    # Runs are started by actions and commands; a workflow with its own request form says so.
    allow_add = False
    run_fields: tuple[str, ...] = (
        "outcome", "progress", "publishing", "trigger", "requested_by", "rerun_of",
        "created_at", "started_at", "finished_at", "waited", "duration", "resumes", "error",
    )  # fmt: skip
    inlines = [RunEventInline]
    actions = ["cancel_runs", "resume_runs"]
    list_filter = ("status", "trigger")
    date_hierarchy = "created_at"

    change_form_template = "admin/core/run_change_form.html"
    # Read-only fields the run page refreshes in place while the run is under way.
    live_fields: tuple[str, ...] = ("outcome", "progress", "publishing", "waited", "duration")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.allow_add and super().has_add_permission(request)

    view_on_site = False  # a run's page in the admin is the only page it has

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        """No empty "Interventions" table on a run nothing happened to."""
        inlines = super().get_inline_instances(request, obj)
        if obj is None or not obj.events.exists():
            inlines = [i for i in inlines if not isinstance(i, RunEventInline)]
        return inlines

    def get_urls(self) -> list[Any]:
        opts = self.model._meta
        name = f"{opts.app_label}_{opts.model_name}_progress"
        view = self.admin_site.admin_view(self.progress_view)
        return [path("<path:object_id>/progress.json", view, name=name), *super().get_urls()]

    def progress_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The run's state as the page shows it: what run-progress.js polls."""
        run = self.get_object(request, object_id)
        if run is None or not self.has_view_permission(request, run):
            return JsonResponse({"error": "no such run, or not yours to see"}, status=404)
        fields = {name: getattr(self, name)(run) for name in self.live_fields}
        return JsonResponse(
            {
                "id": run.pk,
                "status": run.status,
                "settled": run.is_settled,
                "total": run.total,
                "succeeded": run.succeeded,
                "failed": run.failed,
                "fields": {k: str(v) for k, v in fields.items()},
            }
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> Any:
        opts = self.model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_progress", args=[object_id])
        return super().change_view(
            request, object_id, form_url, {"progress_url": url, **(extra_context or {})}
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # runs are records; act on them with the actions

    def has_control_permission(self, request: HttpRequest) -> bool:
        opts = self.model._meta
        return request.user.has_perm(f"{opts.app_label}.control_{opts.model_name}")

    @admin.display(description="Outcome", ordering="status")
    def outcome(self, run: runs.Run) -> str:
        return outcome_text(run, self.item_word)

    @admin.display(description="Progress")
    def progress(self, run: runs.Run) -> str:
        return progress_bar(run)

    @admin.display(description="Publishing")
    def publishing(self, run: runs.Run) -> str:
        waiting = outbox_waiting(run)
        if waiting is None:
            return "published"
        since = timezone.localtime(waiting.created_at)
        return (
            f"waiting for the task broker since {since:%Y-%m-%d %H:%M:%S} "
            f"({waiting.attempts} attempts; last error: {waiting.last_error or '-'}); "
            "it starts by itself when the broker is reachable again"
        )

    @admin.display(description="Waited")
    def waited(self, run: runs.Run) -> str:
        return seconds(run.waited)

    @admin.display(description="Took")
    def duration(self, run: runs.Run) -> str:
        return seconds(run.duration)

    @admin.action(description="Cancel the selected runs", permissions=["control"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[runs.Run]) -> None:
        for run in queryset:
            if run.is_finished:
                self.message_user(
                    request, f"{run} has already finished; nothing cancelled.", messages.WARNING
                )
                continue
            message = reconciler.run_cancel(run, actor=request.user)
            self.message_user(request, f"{run}: {message}", messages.SUCCESS)

    @admin.action(description="Resume the selected runs now", permissions=["control"])
    def resume_runs(self, request: HttpRequest, queryset: QuerySet[runs.Run]) -> None:
        for run in queryset:
            if run.is_finished:
                self.message_user(request, f"{run} has already finished.", messages.INFO)
                continue
            if outbox_waiting(run) is not None:
                self.message_user(
                    request,
                    f"{run} is waiting for the task broker; it starts when the broker is "
                    "reachable again.",
                    messages.WARNING,
                )
                continue
            label = reconciler.run_resume(run, actor=request.user)
            self.message_user(
                request,
                f"{run}: the reconciler re-published its unfinished work ({label}).",
                messages.SUCCESS,
            )


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ("id", "description", "created_at", "published_at", "attempts", "last_error")
    list_filter = (("published_at", admin.EmptyFieldListFilter),)
    readonly_fields = [f.name for f in OutboxMessage._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AgeFilter(admin.SimpleListFilter):
    title = "last failure"
    parameter_name = "age"
    SPANS = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "7d": timedelta(days=7)}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1h", "Last hour"), ("1d", "Last 24 hours"), ("7d", "Last 7 days"),
                ("old", "Older than 7 days")]  # fmt: skip

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value in self.SPANS:
            return queryset.filter(last_failed_at__gte=timezone.now() - self.SPANS[value])
        if value == "old":
            return queryset.filter(last_failed_at__lt=timezone.now() - self.SPANS["7d"])
        return queryset


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Open"), ("replayed", "Replayed"), ("discarded", "Discarded")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return {
            "open": queryset.filter(replayed_at__isnull=True, discarded_at__isnull=True),
            "replayed": queryset.filter(replayed_at__isnull=False),
            "discarded": queryset.filter(discarded_at__isnull=False),
        }.get(self.value() or "", queryset)


def open_dead_letters_per_queue() -> list[tuple[str, int]]:
    """Open dead letters per queue, busiest first (admin index and queue pages)."""
    rows = (
        DeadLetter.objects.filter(replayed_at__isnull=True, discarded_at__isnull=True)
        .values_list("queue")
        .annotate(n=Count("id"))
        .order_by("-n", "queue")
    )
    return list(rows)


@admin.register(DeadLetter)
class DeadLetterAdmin(RefusedActionsMixin, admin.ModelAdmin):
    change_list_template = "admin/core/change_list_note.html"
    list_display = ("id", "task_name", "queue", "reason", "error", "attempts", "last_failed_at",
                    "run_link", "state")  # fmt: skip
    list_filter = (StateFilter, "task_name", "queue", AgeFilter, "reason")
    search_fields = ("=task_id", "task_name", "message")
    date_hierarchy = "last_failed_at"
    actions = ["replay", "discard"]
    readonly_fields = ("task_id", "task_name", "queue", "reason", "exception_type", "message",
                       "args", "kwargs", "attempts", "first_failed_at", "last_failed_at",
                       "run_link", "state", "traceback")  # fmt: skip
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # discard instead: the record of what happened stays

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("core.replay_deadletter")

    def has_discard_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("core.discard_deadletter")

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        per_queue = ", ".join(f"{q or '?'}: {n}" for q, n in open_dead_letters_per_queue())
        return super().changelist_view(
            request,
            {"page_note": f"Open, per queue: {per_queue or 'none'}.", **(extra_context or {})},
        )

    @admin.display(description="error")
    def error(self, letter: DeadLetter) -> str:
        return f"{letter.exception_type}: {letter.message[:100]}"

    @admin.display(description="run")
    def run_link(self, letter: DeadLetter) -> str:
        run = letter.run
        if run is None:
            return "-"
        url = reverse(f"admin:{run._meta.app_label}_{run._meta.model_name}_change", args=[run.pk])
        return format_html('<a href="{}">{}</a>', url, run)

    @admin.display(description="state")
    def state(self, letter: DeadLetter) -> str:
        if letter.replayed_at:
            when = timezone.localtime(letter.replayed_at)
            who = letter.replayed_by or "?"
            return f"replayed {when:%Y-%m-%d %H:%M:%S} by {who} as task {letter.replay_task_id}"
        if letter.discarded_at:
            when = timezone.localtime(letter.discarded_at)
            return f"discarded {when:%Y-%m-%d %H:%M:%S} by {letter.discarded_by or '?'}"
        return "open"

    @admin.action(description="Replay the selected dead letters", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        self._each(request, queryset, deadletters.deadletter_replay, "Replayed")

    @admin.action(description="Discard the selected dead letters", permissions=["discard"])
    def discard(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        self._each(request, queryset, deadletters.deadletter_discard, "Discarded")

    def _each(self, request: HttpRequest, queryset: QuerySet, action: Any, done: str) -> None:
        ok = []
        for letter in queryset:
            try:
                action(dead_letter_id=letter.pk, actor=request.user)
                ok.append(f"#{letter.pk}")
            except deadletters.NotReplayable as exc:
                self.message_user(
                    request, f"Nothing done for #{letter.pk}: {exc}.", messages.WARNING
                )
        if ok:
            self.message_user(request, f"{done} {', '.join(ok)}.", messages.SUCCESS)


# Tasks keep no results (CELERY_TASK_IGNORE_RESULT: the runs hold every outcome; only the
# health check's ping stores one) and groups none at all, so django-celery-results' pages
# listed nothing but offered to add results by hand. Tasks are Flower's to show.
admin.site.unregister([celery_results_admin.TaskResult, celery_results_admin.GroupResult])
