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

Waiting on that event instead of the sockets has one catch: an acknowledgement the broker
never got (it went away) leaves its slot taken for good, and a node whose slots were all
taken so would never read its dead connection again. `install()` remembers such a failure
on the channel and the poller raises it, so the consumer reconnects as it would on a read.

The same loop was slow to change what it consumes. A control command (add_consumer,
cancel_consumer, imports_consume) runs in the pidbox greenlet and leaves the change to the
consumer's loop (`Consumer.call_soon`), which on an idle node sits in `drain_events` for up
to 2 s; the change then took effect only when the BRPOP already sent (1 s timeout) came
back, still without the new queue's keys. A user's first import on idle nodes waited
0.3-3 s before any chunk started. `install()` also wakes the loop when an operation is
scheduled (a pipe in the poller) and, when the queues change, unblocks the BRPOP in flight
(Redis `CLIENT UNBLOCK`: it returns as if it had timed out, and a message it already
popped is delivered as usual), so the next BRPOP names the new queues at once.

On RabbitMQ the same loop took one message per 100 ms: Celery 5.7's synloop, after every
message, drains the event dispatcher's connection for broker heartbeats with a 0.1 s
timeout (`celery.worker.loops._quick_drain`), and that connection almost never has
anything to read. A gevent node ran 10 tasks a second whatever its concurrency.
`install()` drains it only when its socket has something to read.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable
from queue import Empty
from typing import Any

from kombu.utils.eventio import READ

from core.concurrency import readable_now

_MARK = "_shop_waits_for_a_free_slot"
_ACK_LOST = "_shop_ack_lost"  # on a channel: the connection error an ack or reject met
logger = logging.getLogger(__name__)


def installed() -> bool:
    from kombu.transport import redis as kombu_redis

    return getattr(kombu_redis.MultiChannelPoller.get, _MARK, False)


def install(brpop_timeout: float | None = None) -> bool:
    """Patch the green consumer loop (kombu's Redis poller and QoS, Celery's synloop
    helpers) in this process; False if already done."""
    from celery.worker import loops
    from celery.worker.consumer.consumer import Consumer
    from kombu.transport import redis as kombu_redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    if brpop_timeout:
        kombu_redis.Transport.brpop_timeout = brpop_timeout
    if installed():
        return False
    # Made after gevent's monkey patching: a cooperative event under gevent.
    slot_freed = threading.Event()
    poller, qos = kombu_redis.MultiChannelPoller, kombu_redis.QoS
    connection_errors = kombu_redis.Transport.connection_errors  # a class attribute
    get = poller.get
    wake = _Wake(slot_freed)

    def consuming(self: Any) -> list[Any]:
        return [channel for channel in self._channels if channel.active_queues]

    def no_free_slot(self: Any) -> bool:
        channels = consuming(self)
        return bool(channels) and not any(c.qos.can_consume() for c in channels)

    @functools.wraps(get)
    def get_when_a_slot_is_free(self: Any, callback: Any, timeout: float | None = None) -> Any:
        # Only the task consumer's poller is woken: the pidbox's has fanout queues only.
        channels = consuming(self)
        watching = bool(channels)
        for channel in channels:
            lost = getattr(channel, _ACK_LOST, None)
            if lost is not None:
                delattr(channel, _ACK_LOST)
                # A connection error: the consumer reconnects, and its slots start afresh.
                raise RedisConnectionError(f"an acknowledgement was lost: {lost!r}") from lost
        if watching:
            wake.watch(self.poller)
        if watching and wake.take():
            raise TimeoutError()  # back to the loop: it runs the pending operations
        if timeout and no_free_slot(self):
            slot_freed.clear()
            if no_free_slot(self):  # checked again after clear(): no wake-up is lost
                slot_freed.wait(timeout)
            if watching and wake.take():
                raise TimeoutError()
            if no_free_slot(self):
                # Still full after the drain timeout (long tasks): what kombu does then.
                self.maybe_restore_messages()
                raise Empty()
        try:
            return get(self, callback, timeout)
        except Empty:
            if watching and wake.take():
                raise TimeoutError() from None
            raise

    def frees_a_slot(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except connection_errors as exc:
                # The broker went away: kombu keeps the message as delivered, so its slot
                # never frees (Celery only logs "Couldn't ack"). With every slot held so,
                # the poller above would never read the dead connection again, and the
                # node would consume nothing for good (seen after a Redis restart with
                # the imports nodes' 8 slots busy). The poller raises it instead.
                setattr(self.channel, _ACK_LOST, exc)
                raise
            finally:
                slot_freed.set()

        return wrapper

    update_cycle = kombu_redis.Channel._update_queue_cycle

    @functools.wraps(update_cycle)
    def update_cycle_and_restart_brpop(self: Any) -> None:
        update_cycle(self)
        _unblock_brpop(self)

    call_soon = Consumer.call_soon

    @functools.wraps(call_soon)
    def call_soon_and_wake(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call_soon(self, *args, **kwargs)
        finally:
            if not self.hub:  # synloop: nothing else would look at the operation soon
                wake.set()

    setattr(get_when_a_slot_is_free, _MARK, True)
    poller.get = get_when_a_slot_is_free
    qos.ack = frees_a_slot(qos.ack)
    qos.reject = frees_a_slot(qos.reject)
    kombu_redis.Channel._update_queue_cycle = update_cycle_and_restart_brpop
    Consumer.call_soon = call_soon_and_wake
    loops._quick_drain = _drain_if_readable(loops._quick_drain)
    return True


class _Wake:
    """A pipe the consumer's poller watches, written when the loop has work to do."""

    def __init__(self, slot_freed: threading.Event) -> None:
        self.slot_freed = slot_freed
        self.requested = False
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def watch(self, poller: Any) -> None:
        if not getattr(poller, "_shop_watches_wake", False):  # kombu makes a new one on reset
            poller.register(self.read_fd, READ)
            poller._shop_watches_wake = True

    def set(self) -> None:
        self.requested = True  # before the write: a reader that sees the byte sees this
        self.slot_freed.set()  # a loop waiting for a slot looks too
        with contextlib.suppress(BlockingIOError):  # the pipe already holds a wake-up
            os.write(self.write_fd, b"!")

    def take(self) -> bool:
        """True once per wake-up; empties the pipe so the poller does not spin."""
        if not self.requested:
            return False
        self.requested = False
        with contextlib.suppress(BlockingIOError):
            while os.read(self.read_fd, 512):
                pass
        return True


def _drain_if_readable(quick_drain: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(quick_drain)
    def drain(connection: Any, timeout: float = 0.1) -> Any:
        transport = getattr(getattr(connection, "connection", None), "transport", None)
        sock = getattr(transport, "sock", None)
        buffered = getattr(transport, "_read_buffer", b"")
        if sock is not None and not buffered and not readable_now(sock):
            return None  # nothing arrived: do not wait 0.1 s for it
        return quick_drain(connection, timeout)

    return drain


def _unblock_brpop(channel: Any) -> None:
    """Make the channel's blocked BRPOP return now, so the next one names the new queues."""
    connection = channel._in_poll
    sock = getattr(connection, "_sock", None) if connection else None
    if sock is None:
        return
    try:
        address = sock.getsockname()
        if not isinstance(address, tuple):
            return  # a unix socket: CLIENT LIST cannot tell clients apart; BRPOP times out
        addr = f"{address[0]}:{address[1]}"
        admin = channel.Client(connection_pool=channel.pool)  # not the BRPOP connection
        for client in admin.client_list():
            if client.get("addr") == addr and client.get("cmd") == "brpop":
                admin.client_unblock(client["id"])
    except Exception as exc:  # the BRPOP still returns by its own timeout
        logger.debug("Could not unblock the BRPOP in flight: %s", exc)
