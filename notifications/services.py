"""Notifications as plain functions: queue a message, send it once, run a campaign send.

Every message is a `Notification` row with a unique idempotency key, claimed with a guarded
UPDATE before it is sent and marked sent only once the SMTP server accepted it. Tasks call
these functions with ids and schedule the retries they are told of.

Other apps notify through `notify` / `notify_user`: the message is recorded in their
transaction and published (through the outbox) once it commits.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import signature
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Min, Q, QuerySet
from django.template.loader import render_to_string
from django.utils import timezone

from core import runs
from core.bulk import bulk_update_rows
from core.db import TRANSIENT_DB_ERRORS, record_done, release_pooled_connection
from core.outbox import outbox_enqueue
from core.text import plural
from notifications import audiences, limiter, smtp
from notifications.models import Campaign, CampaignBatch, CampaignSend, Notification

logger = logging.getLogger(__name__)

Status = Notification.Status
Kind = Notification.Kind
Batch = CampaignBatch.Status
SEND_TASK = "notifications.tasks.notification_send"


def claim_lease() -> timedelta:
    return timedelta(seconds=settings.NOTIFY_CLAIM_SECONDS)


def retry_delay(attempt: int) -> float:
    """Exponential backoff with full jitter, bounded by EMAIL_RETRY_BACKOFF_MAX."""
    ceiling = min(
        settings.EMAIL_RETRY_BACKOFF * 2 ** max(attempt - 1, 0), settings.EMAIL_RETRY_BACKOFF_MAX
    )
    return random.uniform(0, ceiling)


# --- transactional ------------------------------------------------------------------------
def notify(
    *,
    recipient: str,
    key: str,
    subject: str = "",
    body: str = "",
    template: str = "",
    context: dict[str, Any] | None = None,
) -> Notification:
    """Queue a transactional email, sent once the caller's transaction commits.

    The same `key` twice returns the first notification and sends nothing more. `template`
    names `<template>_subject.txt` and `<template>_body.txt`, rendered with `context`
    (JSON) when the message is sent.
    """
    with transaction.atomic():
        notification, created = Notification.objects.get_or_create(
            idempotency_key=key,
            defaults={
                "kind": Kind.TRANSACTIONAL,
                "recipient": recipient,
                "subject": subject[:255],
                "body": body,
                "template": template,
                "context": context or {},
            },
        )
        if created:
            outbox_enqueue(
                signature(SEND_TASK, kwargs={"notification_id": notification.pk}),
                description=f"send notification #{notification.pk}",
            )
    return notification


def notify_user(user: Any, *, key: str, **message: Any) -> Notification:
    """`notify` the user's email address; without one, a suppressed record says why.

    The caller can tell the person (`has_email(user)`) instead of promising an email.
    """
    if has_email(user):
        return notify(recipient=user.email, key=key, **message)
    notification, _ = Notification.objects.get_or_create(
        idempotency_key=key,
        defaults={
            "kind": Kind.TRANSACTIONAL,
            "status": Status.SUPPRESSED,
            "error": f"not sent: {user or 'nobody'} has no email address",
            "subject": str(message.get("subject", ""))[:255],
            "template": message.get("template", ""),
            "context": message.get("context") or {},
        },
    )
    return notification


def has_email(user: Any) -> bool:
    return bool(getattr(user, "email", "") or "")


def render(notification: Notification) -> tuple[str, str]:
    """Subject and body: as stored, from the campaign, or from the template and context."""
    if notification.campaign_id and not notification.body:
        campaign = notification.campaign
        assert campaign is not None
        return campaign.subject, campaign.body
    if not notification.template:
        return notification.subject, notification.body
    context = notification.context or {}
    subject = render_to_string(f"{notification.template}_subject.txt", context)
    body = render_to_string(f"{notification.template}_body.txt", context)
    return " ".join(subject.split()), body


def notification_send(*, notification_id: int) -> float | None:
    """Send one transactional message; the delay before another attempt when it failed
    transiently. None when sent, failed for good, or not ours to send (a duplicate task).
    """
    now = timezone.now()
    claimed = (
        Notification.objects.filter(pk=notification_id)
        .filter(Q(status=Status.QUEUED) | Q(status=Status.SENDING, claimed_until__lt=now))
        .update(
            status=Status.SENDING,
            claimed_until=now + claim_lease(),
            attempts=F("attempts") + 1,
            next_attempt_at=None,
        )
    )
    if not claimed:
        return None
    notification = Notification.objects.select_related("campaign").get(pk=notification_id)
    attempt = notification.attempts
    try:
        subject, body = render(notification)
        message = smtp.build(
            recipient=notification.recipient,
            subject=subject,
            body=body,
            key=notification.idempotency_key,
            kind=notification.kind,
        )
        release_pooled_connection()
        conn = smtp.connection()
        try:
            smtp.send(conn, message)
        finally:
            smtp.close(conn)
    except smtp.SendError as exc:
        if exc.transient and attempt <= settings.EMAIL_MAX_RETRIES:
            delay = retry_delay(attempt)
            Notification.objects.filter(pk=notification_id, status=Status.SENDING).update(
                status=Status.QUEUED,
                claimed_until=None,
                next_attempt_at=timezone.now() + timedelta(seconds=delay),
                error=f"{exc} (attempt {attempt}, retrying in {delay:.1f} s)",
            )
            return delay
        text = f"{exc}; gave up after {plural(attempt, 'attempt')}" if exc.transient else str(exc)
        _finish(notification_id, Status.FAILED, error=text)
        return None
    except Exception as exc:  # a broken template must fail this message, loudly, once
        logger.exception("Notification %s could not be built", notification_id)
        _finish(notification_id, Status.FAILED, error=f"could not build the message: {exc!r}")
        return None
    message_id, claim = message.extra_headers["Message-ID"], notification.claimed_until
    assert claim is not None  # set by the claim above
    what = f"Notification {notification_id} was sent ({message_id})"
    recorded = record_done(
        lambda: _finish(notification_id, Status.SENT, message_id=message_id, claim=claim),
        claimed_until=claim,
        what=what,
    )
    if not recorded:
        logger.error("%s, but its claim ran out before it was recorded: it is sent again", what)
    return None


def _finish(
    notification_id: int,
    status: str,
    *,
    error: str = "",
    message_id: str = "",
    claim: datetime | None = None,
) -> int:
    """Record the outcome while the message is still being sent (by this claim, if given)."""
    fields: dict[str, Any] = {"status": status, "error": error[:5000], "claimed_until": None}
    if status == Status.SENT:
        fields.update(sent_at=timezone.now(), provider_message_id=message_id)
    sending = Notification.objects.filter(pk=notification_id, status=Status.SENDING)
    if claim is not None:
        sending = sending.filter(claimed_until=claim)
    return sending.update(**fields)


# --- campaigns: creating a send and fanning it out ---------------------------------------
def campaign_key(campaign_id: int, address: str) -> str:
    """One message per recipient and campaign, however often the campaign is sent."""
    return f"campaign-{campaign_id}:{address.strip().lower()}"


def campaign_unfinished_send(campaign: Campaign) -> CampaignSend | None:
    return campaign.sends.filter(status__in=runs.UNFINISHED).order_by("pk").first()


@transaction.atomic
def campaign_send_create(
    *, campaign: Campaign, trigger: str, requested_by: Any = None
) -> CampaignSend:
    audiences.get(campaign.audience)  # an unknown audience starts nothing
    return CampaignSend.objects.create(
        campaign=campaign,
        trigger=trigger,
        requested_by=requested_by if getattr(requested_by, "pk", None) else None,
    )


def campaigns_due(now: datetime | None = None) -> QuerySet[Campaign]:
    """Campaigns whose send time has come and whose scheduled send has not started."""
    now = now or timezone.now()
    return Campaign.objects.filter(send_at__lte=now).filter(
        Q(scheduled_send_started_at__isnull=True) | Q(scheduled_send_started_at__lt=F("send_at"))
    )


def campaign_claim_scheduled(campaign_id: int, now: datetime | None = None) -> bool:
    """Mark the scheduled send started, once: two crons never both start it."""
    now = now or timezone.now()
    return bool(campaigns_due(now).filter(pk=campaign_id).update(scheduled_send_started_at=now))


def campaign_fan_out(*, run_id: int) -> int:
    """Create the send's notifications and batches, a chunk per transaction; the number
    of recipients added. Resumes after the last chunk written, so a second delivery or a
    resumed run continues where the first stopped, and existing keys are never added twice.
    """
    run = CampaignSend.objects.select_related("campaign").get(pk=run_id)
    if run.is_finished or run.fanned_out_at:
        return 0
    try:
        audience = audiences.get(run.campaign.audience)
    except audiences.UnknownAudience as exc:
        _fail_send(run_id, str(exc))
        return 0
    runs.run_mark_started(CampaignSend, run_id)
    try:
        return _fan_out_chunks(run, audience)
    except Exception as exc:
        if not isinstance(exc, TRANSIENT_DB_ERRORS):  # those are retried by the task
            _fail_send(run_id, f"Reading the audience failed: {exc!r}")
        raise


def _fail_send(run_id: int, error: str) -> None:
    """A send that cannot go on: failed, its batches and queued messages cancelled."""
    now = timezone.now()
    with transaction.atomic():
        if runs.run_transition(
            CampaignSend, run_id, CampaignSend.Status.FAILED, error=error[:5000],
            finished_at=now, progress_at=now,
        ):  # fmt: skip
            CampaignBatch.objects.filter(run_id=run_id, status=Batch.PENDING).update(
                status=Batch.CANCELLED, error="the send failed", finished_at=now
            )
            Notification.objects.filter(send_id=run_id, status=Status.QUEUED).update(
                status=Status.CANCELLED, error=f"not sent: {error}"[:5000]
            )
            campaign_send_recount(run_id)


def _fan_out_chunks(run: CampaignSend, audience: audiences.Audience) -> int:
    run_id = run.pk
    added = 0
    while True:
        with transaction.atomic():
            locked = CampaignSend.objects.select_for_update().get(pk=run_id)
            if locked.is_finished or locked.fanned_out_at:
                return added
            chunk = audience.recipients(
                run.campaign.active_within_days,
                locked.fanout_cursor,
                settings.CAMPAIGN_FANOUT_CHUNK,
            )
            now = timezone.now()
            if not chunk:
                CampaignSend.objects.filter(pk=run_id).update(fanned_out_at=now, progress_at=now)
                return added
            added += _fan_out_chunk(locked, run.campaign, chunk, now)


def _fan_out_chunk(
    run: CampaignSend, campaign: Campaign, chunk: list[audiences.Recipient], now: datetime
) -> int:
    wanted: dict[str, audiences.Recipient] = {}
    for recipient in chunk:
        wanted.setdefault(campaign_key(campaign.pk, recipient.address), recipient)
    existing = set(
        Notification.objects.filter(idempotency_key__in=list(wanted)).values_list(
            "idempotency_key", flat=True
        )
    )
    fresh = [(key, r) for key, r in wanted.items() if key not in existing]
    to_send = [(key, r) for key, r in fresh if r.opted_in]
    opted_out = [(key, r) for key, r in fresh if not r.opted_in]
    size = max(1, settings.EMAIL_BULK_BATCH_SIZE)
    groups = [to_send[i : i + size] for i in range(0, len(to_send), size)]
    batches = CampaignBatch.objects.bulk_create(
        [CampaignBatch(run=run, index=run.total + i, size=len(g)) for i, g in enumerate(groups)]
    )
    common = {"kind": Kind.BULK, "subject": campaign.subject[:255], "campaign": campaign,
              "send": run, "created_at": now}  # fmt: skip
    rows = [
        Notification(recipient=r.address, idempotency_key=key, batch=batch, **common)
        for batch, group in zip(batches, groups, strict=True)
        for key, r in group
    ]
    rows += [
        Notification(
            recipient=r.address,
            idempotency_key=key,
            status=Status.SUPPRESSED,
            error="not sent: opted out of marketing email",
            **common,
        )
        for key, r in opted_out
    ]
    Notification.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
    CampaignSend.objects.filter(pk=run.pk).update(
        fanout_cursor=chunk[-1].key,
        total=F("total") + len(batches),
        messages_total=F("messages_total") + len(fresh),
        messages_suppressed=F("messages_suppressed") + len(opted_out),
        messages_skipped=F("messages_skipped") + len(existing),
        progress_at=now,
    )
    return len(fresh)


# --- campaigns: the lanes that send batches -----------------------------------------------
@dataclass(frozen=True)
class LaneStep:
    """What a lane does next: `next` (publish itself again now), `park` (again in `delay`
    seconds), `finish` (publish the finish step) or `stop` (other lanes carry on)."""

    action: str
    delay: float = 0.0


NEXT, STOP, FINISH = LaneStep("next"), LaneStep("stop"), LaneStep("finish")
# A lane the limiter turned away comes back when the window has room for this many
# messages at the limit's pace: sooner costs a wake-up per message, later leaves the
# window part empty (docs/notifications.md, the rate limit).
RESUME_WITH = 4
# A lane with nothing to claim while the fan-out still writes batches looks again after this.
FANOUT_WAIT = 1.0


def campaign_pending_batches(run: CampaignSend) -> QuerySet[CampaignBatch]:
    return run.items.filter(status=Batch.PENDING)


def campaign_lane_step(*, run_id: int) -> LaneStep:
    """Claim the next batch of the send and send it, a rate-limited slice at a time."""
    run = CampaignSend.objects.filter(pk=run_id).select_related("campaign").first()
    if run is None or run.is_finished:
        return STOP
    batch = _claim_batch(run_id)
    if batch is None:
        if run.fanned_out_at is None:
            return LaneStep("park", FANOUT_WAIT)
        now = timezone.now()
        pending = campaign_pending_batches(run)
        if not pending.exists():
            return FINISH
        due = pending.filter(retry_at__gt=now).aggregate(at=Min("retry_at"))["at"]
        ready = pending.filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
        if due is not None and not ready.exists():
            return LaneStep("park", max((due - now).total_seconds(), limiter.MIN_WAIT))
        return STOP  # the rest is claimed by other lanes, which carry on
    return _send_batch(run, batch)


def _claim_batch(run_id: int) -> CampaignBatch | None:
    now = timezone.now()
    free = (
        CampaignBatch.objects.filter(run_id=run_id, status=Batch.PENDING)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
    )
    for pk in free.order_by("index").values_list("pk", flat=True)[: settings.EMAIL_BULK_LANES + 1]:
        if free.filter(pk=pk).update(claimed_until=now + claim_lease()):
            return CampaignBatch.objects.get(pk=pk)
    return None


def _send_batch(run: CampaignSend, batch: CampaignBatch) -> LaneStep:
    """Send the batch's queued messages over one connection, claimed EMAIL_BULK_SLICE at a
    time, each after taking its token from the shared limiter.

    Returns `park` when the limiter says wait (the batch is released for any lane), or
    when the server failed transiently (the batch waits for its backoff).
    """
    if run.status == CampaignSend.Status.PENDING:
        runs.run_mark_started(CampaignSend, run.pk)
    audience = audiences.get(run.campaign.audience)
    conn = None
    try:
        while True:
            ids = list(
                Notification.objects.filter(batch=batch, status=Status.QUEUED)
                .order_by("pk")
                .values_list("pk", flat=True)[: max(1, settings.EMAIL_BULK_SLICE)]
            )
            if not ids:
                break
            # The slice's first token before anything is claimed: a lane the limiter turns
            # away costs one round trip to Redis, not a claim and its release.
            wait = limiter.take(1, resume_with=RESUME_WITH)
            if wait:
                CampaignBatch.objects.filter(pk=batch.pk).update(claimed_until=None)
                return LaneStep("park", wait)
            claimed = _claim_messages(ids)
            if not claimed:
                continue  # a duplicate delivery of this batch took them: never send twice
            if conn is None:
                release_pooled_connection()
                try:
                    conn = smtp.connection()
                except smtp.SendError as exc:
                    _release(claimed)
                    return _batch_retry(run, batch, exc)
            step = _send_slice(run, batch, audience, conn, claimed)
            if step is not None:
                return step
    finally:
        if conn is not None:
            smtp.close(conn)
    _batch_settle(run, batch)
    return NEXT


def _claim_messages(ids: Sequence[int]) -> list[Notification]:
    """Take queued messages with one guarded UPDATE; only those this claim won."""
    token = uuid.uuid4().hex
    Notification.objects.filter(pk__in=ids, status=Status.QUEUED).update(
        status=Status.SENDING, claimed_until=timezone.now() + claim_lease(), claimed_by=token
    )
    return list(
        Notification.objects.filter(pk__in=ids, status=Status.SENDING, claimed_by=token)
        .only("pk", "recipient", "idempotency_key", "attempts", "claimed_until", "claimed_by")
        .order_by("pk")
    )


def _release(messages: Sequence[Notification]) -> None:
    """Claimed but not attempted: back to the queue, as they were."""
    Notification.objects.filter(pk__in=[m.pk for m in messages], status=Status.SENDING).update(
        status=Status.QUEUED, claimed_until=None, claimed_by=""
    )


def _send_slice(
    run: CampaignSend,
    batch: CampaignBatch,
    audience: audiences.Audience,
    conn: Any,
    messages: list[Notification],
) -> LaneStep | None:
    """Send claimed messages, then record them in one transaction; a LaneStep to stop with.

    Each message takes its token from the shared limiter just before it is handed to the
    server, so the rate the provider sees is the rate the limiter counts.
    """
    now = timezone.now()
    gone = audience.opted_out([m.recipient for m in messages]) if audience.opted_out else set()
    release_pooled_connection()  # the sends below need none; the write after takes one
    outcomes: dict[int, tuple[str, str, str]] = {}  # pk -> (status, error, message id)
    transient: smtp.SendError | None = None
    wait = 0.0
    prepaid = True  # the caller took the first message's token
    unsent: list[Notification] = []
    subject, body = run.campaign.subject, run.campaign.body
    for message in messages:
        if transient is not None or wait:
            unsent.append(message)
            continue
        if message.recipient in gone:
            outcomes[message.pk] = (Status.SUPPRESSED, "not sent: opted out before sending", "")
            continue
        if not prepaid:
            wait = limiter.take(1, resume_with=RESUME_WITH)
            if wait:
                unsent.append(message)
                continue
        prepaid = False
        try:
            email = smtp.build(
                recipient=message.recipient, subject=subject, body=body,
                key=message.idempotency_key, kind=Kind.BULK,
            )  # fmt: skip
            smtp.send(conn, email)
        except smtp.SendError as exc:
            if exc.transient:
                transient = exc
                unsent.append(message)
                continue
            outcomes[message.pk] = (Status.FAILED, str(exc), "")
            continue
        outcomes[message.pk] = (Status.SENT, "", email.extra_headers["Message-ID"])
    claimed_until = min((m.claimed_until for m in messages if m.claimed_until), default=now)
    record_done(
        lambda: _record_slice(run, batch, messages, outcomes, now, wait),
        claimed_until=claimed_until,
        what=f"Campaign send {run.pk}: {plural(len(outcomes), 'message')} handled",
    )
    _release(unsent)
    if transient is not None:
        return _batch_retry(run, batch, transient)
    if wait:  # the limit is reached: give the slot back, any lane takes the batch up again
        return LaneStep("park", wait)
    return None


def _record_slice(
    run: CampaignSend,
    batch: CampaignBatch,
    messages: list[Notification],
    outcomes: dict[int, tuple[str, str, str]],
    now: datetime,
    wait: float,
) -> None:
    """The slice's outcomes, the send's counters and the batch's claim, in one transaction.

    Only messages still claimed by this slice are written: after a long database outage
    the sweep may have recorded them as interrupted, and that record stands.
    """
    with transaction.atomic():
        _lock_send(run.pk)
        ours = set(
            Notification.objects.filter(
                pk__in=list(outcomes), status=Status.SENDING, claimed_by=messages[0].claimed_by
            ).values_list("pk", flat=True)
        )
        if len(ours) < len(outcomes):
            logger.error(
                "Campaign send %s: %s handled after their claim ran out; not recorded again",
                run.pk, plural(len(outcomes) - len(ours), "message"),
            )  # fmt: skip
            outcomes = {pk: outcome for pk, outcome in outcomes.items() if pk in ours}
        by_pk = {m.pk: m for m in messages}
        bulk_update_rows(
            Notification,
            ("status", "error", "provider_message_id", "sent_at", "attempts", "claimed_until"),
            (
                (pk, (status, error[:5000], mid, now if status == Status.SENT else None,
                      by_pk[pk].attempts + (status != Status.SUPPRESSED), None))
                for pk, (status, error, mid) in outcomes.items()
            ),
        )  # fmt: skip
        counts = {s: sum(1 for o in outcomes.values() if o[0] == s) for s in Status.values}
        recorded_at = timezone.now()  # not `now`: the record may have waited for the database
        CampaignSend.objects.filter(pk=run.pk).update(
            messages_sent=F("messages_sent") + counts[Status.SENT],
            messages_failed=F("messages_failed") + counts[Status.FAILED],
            messages_suppressed=F("messages_suppressed") + counts[Status.SUPPRESSED],
            progress_at=recorded_at,
        )
        CampaignBatch.objects.filter(pk=batch.pk).update(
            claimed_until=None if wait else recorded_at + claim_lease()
        )


def _batch_retry(run: CampaignSend, batch: CampaignBatch, exc: smtp.SendError) -> LaneStep:
    """A transient SMTP error: the batch waits for its backoff, or gives up after the last."""
    now = timezone.now()
    attempt = batch.attempts + 1
    if attempt > settings.EMAIL_MAX_RETRIES:
        error = f"{exc}; gave up after {plural(attempt, 'attempt')}"
        with transaction.atomic():
            _lock_send(run.pk)
            failed = Notification.objects.filter(batch=batch, status=Status.QUEUED).update(
                status=Status.FAILED, error=error, claimed_until=None
            )
            CampaignSend.objects.filter(pk=run.pk).update(
                messages_failed=F("messages_failed") + failed, progress_at=now
            )
            CampaignBatch.objects.filter(pk=batch.pk).update(attempts=attempt)
        batch.refresh_from_db()
        _batch_settle(run, batch)
        return NEXT
    delay = retry_delay(attempt)
    CampaignBatch.objects.filter(pk=batch.pk).update(
        attempts=attempt,
        claimed_until=None,
        retry_at=now + timedelta(seconds=delay),
        error=f"{exc} (attempt {attempt}, retrying in {delay:.1f} s)",
    )
    return LaneStep("park", delay)


def _lock_send(run_id: int) -> None:
    """Take the send's row first, in every transaction that writes the send and its rows.

    One order for all of them (the send, then messages and batches): the fan-out already
    locks it first, and a cancel during a busy send deadlocked on PostgreSQL when lanes
    took messages, then the send, then their batch, while the cancel went the other way.
    """
    CampaignSend.objects.select_for_update().filter(pk=run_id).values_list("pk").first()


def _batch_settle(run: CampaignSend, batch: CampaignBatch) -> None:
    """Every message of the batch has an outcome: the batch succeeds, or fails if any did."""
    with transaction.atomic():
        _lock_send(run.pk)
        counts = dict(
            Notification.objects.filter(batch=batch).values_list("status").annotate(n=Count("id"))
        )
        if counts.get(Status.QUEUED) or counts.get(Status.SENDING):
            return  # a duplicate lane still sends part of it; it settles the batch
        failed = counts.get(Status.FAILED, 0)
        status = Batch.FAILED if failed else Batch.SUCCEEDED
        error = f"{failed} of {plural(batch.size, 'message')} failed" if failed else ""
        settled = CampaignBatch.objects.filter(pk=batch.pk, status=Batch.PENDING).update(
            status=status, error=error, finished_at=timezone.now(), claimed_until=None,
            retry_at=None,
        )  # fmt: skip
        if settled:
            runs.run_add_progress(
                CampaignSend, run.pk, succeeded=int(not failed), failed=int(bool(failed))
            )


def campaign_send_finish(*, run_id: int) -> str | None:
    """Finish the send once the fan-out is done and every batch settled; the new status."""
    with transaction.atomic():
        run = CampaignSend.objects.select_for_update().get(pk=run_id)
        if run.is_finished or run.fanned_out_at is None:
            return None
        status = runs.run_settle(CampaignSend, run_id)
        if status is not None:
            campaign_send_recount(run_id)
        return status


def campaign_send_recount(run_id: int) -> None:
    """Message counters from the messages themselves (exact, whatever ran twice)."""
    counts = dict(
        Notification.objects.filter(send_id=run_id).values_list("status").annotate(n=Count("id"))
    )
    CampaignSend.objects.filter(pk=run_id).update(
        messages_sent=counts.get(Status.SENT, 0),
        messages_failed=counts.get(Status.FAILED, 0),
        messages_suppressed=counts.get(Status.SUPPRESSED, 0),
        messages_cancelled=counts.get(Status.CANCELLED, 0),
    )


@transaction.atomic
def campaign_send_cancel(run: CampaignSend, actor: Any = None) -> str:
    """Cancel the queued messages and batches; lanes stop, messages in flight finish."""
    now = timezone.now()
    who = f" by {actor}" if getattr(actor, "pk", None) else ""
    _lock_send(run.pk)
    CampaignSend.objects.filter(pk=run.pk, fanned_out_at__isnull=True).update(fanned_out_at=now)
    batches = run.items.filter(status=Batch.PENDING).update(
        status=Batch.CANCELLED, error=f"cancelled{who}", finished_at=now, retry_at=None
    )
    messages = Notification.objects.filter(send=run, status=Status.QUEUED).update(
        status=Status.CANCELLED, error=f"not sent: the campaign send was cancelled{who}"
    )
    if batches:
        runs.run_settle(CampaignSend, run.pk, error=f"Cancelled{who}.")
    else:
        runs.run_transition(
            CampaignSend, run.pk, CampaignSend.Status.CANCELLED, finished_at=now,
            progress_at=now, error=f"Cancelled{who}.",
        )  # fmt: skip
    campaign_send_recount(run.pk)
    return f"Cancelled{who}: {plural(messages, 'queued message')} will not be sent."


def campaign_progress(campaign: Campaign) -> dict[str, int]:
    """Every message of the campaign by outcome, across its sends."""
    counts = dict(
        Notification.objects.filter(campaign=campaign).values_list("status").annotate(n=Count("id"))
    )
    return {
        "sent": counts.get(Status.SENT, 0),
        "failed": counts.get(Status.FAILED, 0),
        "suppressed": counts.get(Status.SUPPRESSED, 0),
        "cancelled": counts.get(Status.CANCELLED, 0),
        "waiting": counts.get(Status.QUEUED, 0) + counts.get(Status.SENDING, 0),
        "total": sum(counts.values()),
    }


# --- the sweep: messages whose worker or task went missing --------------------------------
@dataclass
class Sweep:
    republished: int = 0
    interrupted: int = 0
    orphaned: int = 0

    def summary(self) -> str:
        return (
            f"re-queued {plural(self.republished, 'transactional message')}; "
            f"{self.interrupted} interrupted bulk message(s) and {self.orphaned} left behind "
            "by finished sends recorded as failed"
        )


def notifications_sweep(*, now: datetime | None = None) -> Sweep:
    """Nothing is left behind: transactional messages that were due and never sent are
    queued again (their claim makes a duplicate harmless); bulk messages whose worker died
    mid-send are recorded as failed, not re-sent, so that nobody gets a campaign twice.
    """
    now = now or timezone.now()
    stall = now - timedelta(seconds=settings.RUN_STALL_AFTER)
    result = Sweep()
    transactional = Notification.objects.filter(kind=Kind.TRANSACTIONAL)
    overdue = transactional.filter(
        Q(status=Status.QUEUED)
        & (Q(next_attempt_at__isnull=True, created_at__lt=stall) | Q(next_attempt_at__lt=stall))
        | Q(status=Status.SENDING, claimed_until__lt=now)
    )
    for pk in overdue.values_list("pk", flat=True)[:1000]:
        with transaction.atomic():
            # next_attempt_at=now: the next sweep waits another stall period for it.
            if overdue.filter(pk=pk).update(
                status=Status.QUEUED, claimed_until=None, next_attempt_at=now
            ):
                outbox_enqueue(
                    signature(SEND_TASK, kwargs={"notification_id": pk}),
                    description=f"re-send notification #{pk} (sweep)",
                )
                result.republished += 1
    bulk = Notification.objects.filter(kind=Kind.BULK)
    touched: set[int] = set()
    interrupted = bulk.filter(status=Status.SENDING, claimed_until__lt=now)
    touched |= set(interrupted.values_list("send_id", flat=True).distinct())
    result.interrupted = interrupted.update(
        status=Status.FAILED,
        claimed_until=None,
        error="interrupted while sending (its worker stopped): not sent again, so that "
        "nobody gets it twice",
    )
    orphaned = bulk.filter(status=Status.QUEUED, send__status__in=runs.FINISHED)
    touched |= set(orphaned.values_list("send_id", flat=True).distinct())
    result.orphaned = orphaned.update(
        status=Status.FAILED, error="not sent: the campaign send finished without it"
    )
    for send_id in touched - {None}:
        campaign_send_recount(send_id)
    return result
