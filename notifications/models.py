"""Notifications: one record per message, and campaigns sent as runs on the kernel.

A `Notification` is the record of truth for one message to one address: what it says, how
far it got, and a unique idempotency key, so that asking twice (a duplicate task, a
campaign sent again) never sends twice. Recipients are addresses, never customers: the
domains that know people (shop, reports) hand over addresses.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from core.runs import Run, RunItem


class Campaign(models.Model):
    """What to send to whom: content and audience. Sending it is a `CampaignSend` run."""

    name = models.CharField(max_length=200)
    subject = models.CharField(max_length=255)
    body = models.TextField(help_text="Plain text. Sent as is to every recipient.")
    # An audience registered by a domain app (notifications.audiences): who gets it.
    audience = models.CharField(max_length=64)
    active_within_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Only recipients active in the last N days (customers: with an order in "
        "that period). Empty: everyone in the audience.",
    )
    send_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Send automatically at this time (cron runs `manage.py send_due_campaigns`"
        "). Empty: only when someone sends it.",
    )
    # The last scheduled send started (for send_at); a later send_at makes it due again.
    scheduled_send_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        permissions = [("send_campaign", "Can send campaigns")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("admin:notifications_campaign_change", args=[self.pk])


class CampaignSend(Run):
    """One sending of a campaign, on the run kernel: its items are batches of recipients.

    The kernel's counters (total, succeeded, failed) count batches; the `messages_*`
    counters count messages, which is what people read.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="sends")
    # The fan-out reads the audience in chunks, resuming after `fanout_cursor`; it is done
    # once `fanned_out_at` is set.
    fanout_cursor = models.BigIntegerField(null=True, blank=True)
    fanned_out_at = models.DateTimeField(null=True, blank=True)
    messages_total = models.PositiveIntegerField(default=0)
    messages_sent = models.PositiveIntegerField(default=0)
    messages_failed = models.PositiveIntegerField(default=0)
    messages_suppressed = models.PositiveIntegerField(default=0)
    messages_cancelled = models.PositiveIntegerField(default=0)
    # Recipients an earlier send of the same campaign already has: not sent again.
    messages_skipped = models.PositiveIntegerField(default=0)

    class Meta(Run.Meta):
        permissions = [("control_campaignsend", "Can cancel and resume campaign sends")]

    def __str__(self) -> str:
        return f"Campaign send #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("admin:notifications_campaignsend_change", args=[self.pk])

    @property
    def messages_done(self) -> int:
        return (
            self.messages_sent
            + self.messages_failed
            + self.messages_suppressed
            + self.messages_cancelled
        )


class CampaignBatch(RunItem):
    """Up to EMAIL_BULK_BATCH_SIZE recipients, sent by one task over one SMTP connection."""

    run = models.ForeignKey(CampaignSend, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField()
    size = models.PositiveIntegerField(default=0)
    # The lane working on it; renewed per slice, expired when its worker is gone.
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="campaign_batch_once")]
        indexes = [models.Index(fields=["run", "status"])]
        verbose_name_plural = "campaign batches"

    def __str__(self) -> str:
        return f"send {self.run_id} batch {self.index + 1}: {self.status}"


class Notification(models.Model):
    """One message to one address, sent at most once per idempotency key."""

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        PUSH = "push", "Push"

    class Kind(models.TextChoices):
        TRANSACTIONAL = "transactional", "Transactional"
        BULK = "bulk", "Bulk"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SUPPRESSED = "suppressed", "Suppressed"
        CANCELLED = "cancelled", "Cancelled"

    channel = models.CharField(max_length=8, choices=Channel.choices, default=Channel.EMAIL)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TRANSACTIONAL)
    # An email address (or a device token for push); empty when the person has none.
    recipient = models.CharField(max_length=254, blank=True)
    # Either subject and body, or a template (rendered when sent) and its context.
    subject = models.CharField(max_length=255, blank=True)
    body = models.TextField(blank=True)
    template = models.CharField(max_length=200, blank=True)
    context = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # Unique: whoever asks for the same message again gets the existing one back.
    idempotency_key = models.CharField(max_length=255, unique=True)
    # The Message-ID we gave the message: what the provider and bounces refer to.
    provider_message_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # A transient failure scheduled another attempt at this time.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Who may send it right now (status sending): a worker gone past this time lost it.
    claimed_until = models.DateTimeField(null=True, blank=True)
    # The claim's token: a batch sends exactly the messages its own guarded UPDATE took.
    claimed_by = models.CharField(max_length=32, blank=True)
    campaign = models.ForeignKey(
        Campaign, null=True, blank=True, on_delete=models.PROTECT, related_name="notifications"
    )
    send = models.ForeignKey(
        CampaignSend,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
    )
    batch = models.ForeignKey(
        CampaignBatch,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["batch", "status"]),
            models.Index(fields=["campaign", "status"]),
            models.Index(fields=["status", "kind"]),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.channel} to {self.recipient or '-'}: {self.status}"
