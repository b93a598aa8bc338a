"""A bulk rate limit needs a Redis every bulk worker shares; say so before it is needed."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


@checks.register("notifications")
def check_bulk_limiter(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.EMAIL_BULK_MAX_PER_SECOND <= 0:
        return []
    url = settings.EMAIL_BULK_LIMITER_URL
    if url.startswith(("redis://", "rediss://", "redis+unix://", "unix://")):
        return []
    return [
        checks.Error(
            f"EMAIL_BULK_MAX_PER_SECOND is {settings.EMAIL_BULK_MAX_PER_SECOND} but the shared "
            f"limiter has no Redis (EMAIL_BULK_LIMITER_URL is {url!r}): bulk workers could "
            "not share one limit.",
            hint="Set EMAIL_BULK_LIMITER_URL=redis://host:6379/N (needed when the broker is "
            "RabbitMQ), or EMAIL_BULK_MAX_PER_SECOND=0 for no limit.",
            id="notifications.E001",
        )
    ]
