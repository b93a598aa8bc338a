"""Run I/O-bound calls concurrently: greenlets on a gevent worker, threads elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a pinned dependency
        return False
    return bool(monkey.is_module_patched("socket"))


def map_concurrently(func: Callable[[T], R], items: Iterable[T], *, limit: int) -> list[R]:
    """`[func(x) for x in items]` with at most `limit` calls in flight, results in order.

    On a gevent worker a gevent pool costs a greenlet per call and no thread; elsewhere
    (a prefork worker, a test, a management command) a thread pool does the same.
    """
    items = list(items)
    limit = max(1, min(limit, len(items)))
    if limit == 1:
        return [func(x) for x in items]
    if _gevent_active():
        from gevent.pool import Pool

        return list(Pool(limit).imap(func, items))
    with ThreadPoolExecutor(max_workers=limit) as pool:
        return list(pool.map(func, items))
