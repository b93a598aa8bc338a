"""A gevent node on Redis takes its next message as soon as a slot frees, not 1-2 s later.

Celery runs green pools without an event loop (`celery.worker.loops.synloop`). When every
slot is busy (worker_disable_prefetch, or late acks filling the prefetch window), kombu's
Redis poller (`kombu.transport.redis.MultiChannelPoller.get`, kombu 5.7) pauses its BRPOP
and then sleeps for up to a second, or polls a socket that has no command in flight for
the whole 2 s drain timeout, before it looks at the slots again: nothing wakes it when a
task finishes. Measured on the imports pool (8 slots, 100 ms chunks, a backlog of 7,000
chunks), a node took its messages in batches of 8 and its slots were busy 10% of the time;
every gevent pool with more messages than slots loses the same way.

`install()` makes the poller wait on an event instead, set whenever a message is
acknowledged or rejected (our tasks acknowledge late, so that is when a slot frees), and
then poll as before. Installed by core.worker on green nodes only; prefork nodes run
Celery's event loop, which already wakes on finished tasks.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from queue import Empty
from typing import Any

_MARK = "_shop_waits_for_a_free_slot"


def installed() -> bool:
    from kombu.transport import redis as kombu_redis

    return getattr(kombu_redis.MultiChannelPoller.get, _MARK, False)


def install() -> bool:
    """Patch kombu's Redis poller and QoS in this process; False if already done."""
    from kombu.transport import redis as kombu_redis

    if installed():
        return False
    # Made after gevent's monkey patching: a cooperative event under gevent.
    slot_freed = threading.Event()
    poller, qos = kombu_redis.MultiChannelPoller, kombu_redis.QoS
    get = poller.get

    def no_free_slot(self: Any) -> bool:
        consuming = [channel for channel in self._channels if channel.active_queues]
        return bool(consuming) and not any(c.qos.can_consume() for c in consuming)

    @functools.wraps(get)
    def get_when_a_slot_is_free(self: Any, callback: Any, timeout: float | None = None) -> Any:
        if timeout and no_free_slot(self):
            slot_freed.clear()
            if no_free_slot(self):  # checked again after clear(): no wake-up is lost
                slot_freed.wait(timeout)
            if no_free_slot(self):
                # Still full after the drain timeout (long tasks): what kombu does then.
                self.maybe_restore_messages()
                raise Empty()
        return get(self, callback, timeout)

    def frees_a_slot(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            finally:
                slot_freed.set()

        return wrapper

    setattr(get_when_a_slot_is_free, _MARK, True)
    poller.get = get_when_a_slot_is_free
    qos.ack = frees_a_slot(qos.ack)
    qos.reject = frees_a_slot(qos.reject)
    return True
