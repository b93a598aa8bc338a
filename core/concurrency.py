"""Run I/O-bound calls concurrently on greenlets, one at a time where that is faster, and a
cheap readiness check for sockets."""

from __future__ import annotations

import functools
import select
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import gevent

T = TypeVar("T")
R = TypeVar("R")


def map_concurrently(func: Callable[[T], R], items: Iterable[T], *, limit: int) -> list[R]:
    """`[func(x) for x in items]` with at most `limit` calls in flight, results in order.

    `limit` greenlets of the calling thread's hub take the items in turn (not a greenlet
    per call: gevent's Pool.imap spent 3% of a refresh's CPU on spawning and bookkeeping).
    `func` must wait on gevent: any I/O on a gevent worker (patched), and gevent-native I/O
    elsewhere (a test, a management command), as the supplier client's always is. A call
    that blocks the thread runs the others one after another, still correctly. An exception
    is raised once the other greenlets have done the rest.
    """
    items = list(items)
    limit = max(1, min(limit, len(items)))
    if limit == 1:
        return [func(x) for x in items]
    results: list[Any] = [None] * len(items)
    todo = iter(enumerate(items))

    def take_turns() -> None:
        for i, item in todo:
            results[i] = func(item)

    greenlets = [gevent.spawn(take_turns) for _ in range(limit)]
    gevent.joinall(greenlets)
    for greenlet in greenlets:
        if greenlet.exception is not None:
            raise greenlet.exception
    return results


def readable_now(sock: socket.socket) -> bool:
    """Whether `sock` has something to read right now (data, or EOF when the peer closed).

    A zero-timeout poll never blocks, so the unpatched `select.poll` is safe on a gevent
    worker, where the patched one goes through gevent's emulation (9% of a refresh's CPU
    when urllib3 checked every pooled connection that way; the supplier client's pool
    checks with this now); and `poll`, unlike `select`, takes descriptors above 1024,
    which a node with hundreds of HTTP connections reaches.
    """
    poller = _native_poll()()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def cooperative() -> bool:
    """Whether gevent patched this process (a gevent worker): waits must then yield."""
    from gevent import monkey

    return bool(monkey.is_module_patched("threading"))


_gates: dict[str, Any] = {}


def process_gate(name: str, size: int = 1) -> Any:
    """A semaphore shared by the whole process under `name`: `with process_gate("x"):`.

    Why: on a gevent node, CPU-bound steps of many tasks at once (a chunk's database writes
    after its HTTP calls) share one core by taking turns at every round trip, so each is
    stretched by all the others, holding its transaction and row locks that much longer,
    and the step that began first does not finish first. Through a gate of one, each runs
    nearly alone and the waiting ones hold no connection; greenlets doing anything else
    still run. It yields to other greenlets on a gevent node (created on first use, after
    gevent patched the process) and blocks the thread elsewhere. `size` counts on first use.
    """
    gate = _gates.get(name)
    if gate is None:
        if cooperative():
            from gevent.lock import BoundedSemaphore

            gate = _gates.setdefault(name, BoundedSemaphore(size))
        else:
            gate = _gates.setdefault(name, threading.BoundedSemaphore(size))
    return gate


@functools.cache
def _native_poll() -> Any:
    from gevent import monkey

    return monkey.get_original("select", "poll")
