"""The provider's rate limit on bulk email, shared by every worker on every host.

Celery's `rate_limit` is per worker instance (it multiplies with the fleet) and holds
rate-limited tasks in the worker's memory, where they take prefetch room (celery#8119).
Here one moving window in Redis (the `limits` library) counts every bulk message any
worker sends: a batch takes a token just before it hands each message to the server, and
when the window is full it learns how long to wait and gives its slot back
(docs/notifications.md).
"""

from __future__ import annotations

import functools
import time

from django.conf import settings
from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

NAMESPACE = "bulk-email"
# Shortest and longest wait a refused taker is told: the window frees up within a second.
MIN_WAIT = 0.02
MAX_WAIT = 1.0


@functools.cache
def _limiter(url: str) -> MovingWindowRateLimiter:
    return MovingWindowRateLimiter(storage_from_string(url))


def take(
    cost: int,
    *,
    per_second: int | None = None,
    url: str | None = None,
    seconds: int = 1,
    resume_with: int = 1,
) -> float:
    """Take `cost` tokens: 0.0 when granted, else how many seconds to wait before asking again.

    `per_second` 0 means no limit; a cost above the limit could never be granted. The
    window is one second; `seconds` stretches it (`per_second` per that many seconds).
    A refused taker is told to wait until the window has room for `resume_with` tokens at
    the limit's pace: waking for a single token would cost a round trip per message.
    """
    limit = settings.EMAIL_BULK_MAX_PER_SECOND if per_second is None else per_second
    if limit <= 0 or cost <= 0:
        return 0.0
    if cost > limit:
        raise ValueError(f"cannot take {cost} tokens at once under a limit of {limit}/s")
    item = RateLimitItemPerSecond(limit, seconds)
    limiter = _limiter(url or settings.EMAIL_BULK_LIMITER_URL)
    if limiter.hit(item, NAMESPACE, cost=cost):
        return 0.0
    reset_at, _ = limiter.get_window_stats(item, NAMESPACE)
    pace = resume_with * seconds / limit
    return min(max(reset_at - time.time(), pace, MIN_WAIT), MAX_WAIT * seconds)
