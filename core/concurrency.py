"""Run I/O-bound calls concurrently on greenlets, one at a time where that is faster, and a
cheap readiness check for sockets."""

from __future__ import annotations

import functools
import select
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import gevent

T = TypeVar("T")
R = TypeVar("R")


def map_in_batches(
    func: Callable[[T], R], items: Iterable[T], *, limit: int, every: float | None = None
) -> Iterator[list[tuple[int, R]]]:
    """`func` over `items` with at most `limit` calls in flight, handing back `(index,
    result)` pairs: whatever finished in each `every` seconds while calls are still out,
    and the rest when all are done (with `every` None: everything at once).

    Why batches: a refresh chunk whose one product waits out the supplier's read timeout
    would otherwise hold the other 99 results, and the run's progress, until it gives up.

    `limit` greenlets of the calling thread's hub take the items in turn (not a greenlet
    per call: gevent's Pool.imap spent 3% of a refresh's CPU on spawning and bookkeeping).
    `func` must wait on gevent: any I/O on a gevent worker (patched), and gevent-native I/O
    elsewhere (a test, a management command), as the supplier client's always is. A call
    that blocks the thread runs the others one after another, still correctly. An exception
    is raised once the other greenlets have done the rest and their results are handed back.
    """
    items = list(items)
    if not items:
        return
    finished: list[tuple[int, R]] = []
    todo = iter(enumerate(items))

    def take_turns() -> None:
        for i, item in todo:
            finished.append((i, func(item)))

    limit = max(1, min(limit, len(items)))
    greenlets = [gevent.spawn(take_turns) for _ in range(limit)]
    handed = 0
    try:
        while len(gevent.joinall(greenlets, timeout=every)) < len(greenlets):
            if len(finished) > handed:
                batch, handed = finished[handed:], len(finished)
                yield batch
    finally:  # the caller gave up on the rest (its own error): no calls left running
        gevent.killall([g for g in greenlets if not g.dead])
    if len(finished) > handed:
        yield finished[handed:]
    for greenlet in greenlets:
        if greenlet.exception is not None:
            raise greenlet.exception


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
