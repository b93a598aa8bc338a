"""The SMTP side: messages built for Django's mail backend, and what the server's errors mean.

Transient errors (connection refused or dropped, timeouts, 4xx replies) are worth another
attempt later; permanent ones (5xx replies, an address that is not one) are recorded and
never retried. Django's SMTP backend does the talking; one connection can carry a whole
batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import smtplib
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.core.validators import validate_email


class SendError(Exception):
    """Why a message was not accepted; `transient` says whether to try again later."""

    transient = False


class TransientError(SendError):
    transient = True


class PermanentError(SendError):
    pass


def message_id(key: str) -> str:
    """A Message-ID derived from the idempotency key: a re-send carries the same one."""
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2].strip(">") or "localhost"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def check_address(address: str) -> None:
    """PermanentError for something that is not an email address (never worth a retry)."""
    try:
        validate_email(address)
    except ValidationError:
        raise PermanentError(f"invalid address {address!r}") from None


def build(*, recipient: str, subject: str, body: str, key: str, kind: str) -> EmailMessage:
    check_address(recipient)
    return EmailMessage(
        subject=subject,
        body=body,
        to=[recipient],
        headers={"Message-ID": message_id(key), "X-Notification-Kind": kind},
    )


def connection() -> BaseEmailBackend:
    """An open connection (Django's configured backend); TransientError if unreachable."""
    conn = get_connection(fail_silently=False, timeout=settings.EMAIL_TIMEOUT)
    try:
        conn.open()
    except Exception as exc:
        raise classify(exc) from exc
    return conn


def close(conn: BaseEmailBackend) -> None:
    with contextlib.suppress(Exception):  # the server may be gone already
        conn.close()


def send(conn: BaseEmailBackend, message: EmailMessage) -> None:
    """Hand one message to the server; returns only once the server accepted it."""
    try:
        sent = conn.send_messages([message])
    except Exception as exc:
        raise classify(exc) from exc
    if sent != 1:
        raise TransientError("the mail backend did not send the message")


def classify(exc: BaseException) -> SendError:
    """The SMTP client's exception as transient or permanent, with a message for people."""
    if isinstance(exc, SendError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = _worst(exc.recipients)
        return _by_code(code, f"recipient refused: {code} {reply}")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        # Our credentials, not the message: worth retrying once an operator fixes them.
        return TransientError(f"SMTP login refused: {exc.smtp_code} {_text(exc.smtp_error)}")
    if isinstance(exc, smtplib.SMTPResponseException):
        return _by_code(exc.smtp_code, f"SMTP error {exc.smtp_code} {_text(exc.smtp_error)}")
    if isinstance(exc, smtplib.SMTPServerDisconnected | OSError):
        return TransientError(f"SMTP server unreachable: {exc.__class__.__name__}: {exc}")
    if isinstance(exc, ValueError):  # Django's sanitize_address: not an address
        return PermanentError(f"invalid address: {exc}")
    return PermanentError(f"{exc.__class__.__name__}: {exc}")


def _by_code(code: int, text: str) -> SendError:
    return PermanentError(text) if code >= 500 else TransientError(text)


def _worst(recipients: dict[str, Any]) -> tuple[int, str]:
    """The most final of the refusals: a 5xx beats a 4xx."""
    code, reply = max(recipients.values(), key=lambda r: r[0], default=(550, b"refused"))
    return code, _text(reply)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
