"""Notifications in the admin: every message with its outcome, campaigns and their sends."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from core.admin import RunAdmin
from core.outbox import Published
from notifications import audiences, services, workflows
from notifications.models import Campaign, CampaignSend, Notification

SEND_PERMISSION = "notifications.send_campaign"


def _notifications_link(text: str, **filters: Any) -> str:
    url = reverse("admin:notifications_notification_changelist") + "?" + urlencode(filters)
    return format_html('<a href="{}">{}</a>', url, text)


def messages_text(run: CampaignSend) -> str:
    """'1,200 sent, 3 failed, 40 suppressed of 1,243' (+ skipped, cancelled when any)."""
    parts = [f"{run.messages_sent:,} sent", f"{run.messages_failed:,} failed",
             f"{run.messages_suppressed:,} suppressed"]  # fmt: skip
    if run.messages_cancelled:
        parts.append(f"{run.messages_cancelled:,} cancelled")
    text = ", ".join(parts) + f" of {run.messages_total:,}"
    if run.messages_skipped:
        text += f" ({run.messages_skipped:,} already had it from an earlier send)"
    if run.fanned_out_at is None and not run.is_finished:
        text += " so far (still reading the audience)"
    return text


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "kind", "recipient", "subject", "status", "attempts",
                    "sent_at", "error_text")  # fmt: skip
    list_filter = ("status", "kind", "channel", "campaign")
    search_fields = ("recipient", "subject", "=idempotency_key", "=provider_message_id")
    date_hierarchy = "created_at"
    list_select_related = ("campaign",)
    show_full_result_count = False  # counting 100,000 campaign messages on every page: no

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Notification._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the record of what was sent to whom stays

    @admin.display(description="error")
    def error_text(self, notification: Notification) -> str:
        return notification.error[:120]


class CampaignForm(forms.ModelForm):
    audience = forms.ChoiceField(choices=())

    class Meta:
        model = Campaign
        fields = ("name", "subject", "body", "audience", "active_within_days", "send_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["audience"].choices = audiences.choices()


class CampaignSendInline(admin.TabularInline):
    model = CampaignSend
    verbose_name = "send"
    verbose_name_plural = "Sends"
    fields = ("link", "status", "messages", "created_at", "finished_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # part of the campaign: whoever may view it sees how it went

    @admin.display(description="send")
    def link(self, run: CampaignSend) -> str:
        return format_html('<a href="{}">{}</a>', run.get_absolute_url(), run)

    @admin.display(description="messages")
    def messages(self, run: CampaignSend) -> str:
        return messages_text(run)


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    list_display = ("name", "subject", "audience_label", "send_at", "progress_text")
    search_fields = ("name", "subject")
    readonly_fields = ("progress_text", "created_by", "created_at", "scheduled_send_started_at")
    inlines = [CampaignSendInline]
    actions = ["send_now"]

    def has_send_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(SEND_PERMISSION)

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="audience", ordering="audience")
    def audience_label(self, campaign: Campaign) -> str:
        try:
            label = audiences.get(campaign.audience).label
        except audiences.UnknownAudience:
            label = f"{campaign.audience} (unknown)"
        if campaign.active_within_days:
            label += f", active in the last {campaign.active_within_days} days"
        return label

    @admin.display(description="progress")
    def progress_text(self, campaign: Campaign) -> str:
        """Sent, failed, suppressed and total over every send: the operator's question."""
        if campaign.pk is None:
            return "-"
        p = services.campaign_progress(campaign)
        if not p["total"]:
            return "not sent yet"
        text = (
            f"{p['sent']:,} sent, {p['failed']:,} failed, {p['suppressed']:,} suppressed, "
            f"{p['waiting']:,} waiting, of {p['total']:,}"
        )
        if p["cancelled"]:
            text += f" ({p['cancelled']:,} cancelled)"
        if p["failed"]:
            link = _notifications_link(
                "see the failed messages", campaign__id__exact=campaign.pk, status__exact="failed"
            )
            return format_html("{}: {}", text, link)
        return text

    @admin.action(description="Send the selected campaigns now", permissions=["send"])
    def send_now(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset:
            try:
                run, outbox = workflows.campaign_send_request(
                    campaign=campaign, trigger=CampaignSend.Trigger.ADMIN, requested_by=request.user
                )
            except workflows.AlreadySending as exc:
                self.message_user(
                    request,
                    format_html(
                        "{}: not sent again, <a href='{}'>{}</a> has not finished yet.",
                        campaign, exc.send.get_absolute_url(), exc.send,
                    ),
                    messages.WARNING,
                )  # fmt: skip
                continue
            except audiences.UnknownAudience as exc:
                self.message_user(request, f"{campaign}: nothing sent, {exc}.", messages.ERROR)
                continue
            link = format_html('<a href="{}">{}</a>', run.get_absolute_url(), run)
            if getattr(outbox, "outcome", None) == Published.FAILED:
                self.message_user(
                    request,
                    format_html(
                        "{} of {} is saved and will start when the task broker is reachable "
                        "again.", link, campaign,
                    ),
                    messages.WARNING,
                )  # fmt: skip
            else:
                self.message_user(
                    request, format_html("Started {} of {}.", link, campaign), messages.SUCCESS
                )


@admin.register(CampaignSend)
class CampaignSendAdmin(RunAdmin):
    item_word = "batch"
    list_display = ("__str__", "campaign", "outcome", "progress", "messages", "trigger",
                    "requested_by", "created_at", "duration")  # fmt: skip
    list_select_related = ("campaign", "requested_by")
    fields = ("campaign", "messages", "failed_messages", *RunAdmin.run_fields)
    readonly_fields = fields

    @admin.display(description="messages")
    def messages(self, run: CampaignSend) -> str:
        return messages_text(run)

    @admin.display(description="failed messages")
    def failed_messages(self, run: CampaignSend) -> str:
        if not run.messages_failed:
            return "none"
        return _notifications_link(
            f"{run.messages_failed:,} failed: see each with its error",
            send__id__exact=run.pk, status__exact="failed",
        )  # fmt: skip
