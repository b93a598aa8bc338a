"""A broker outage must not shut a worker node down for good (kombu 5.7, Celery 5.7, Redis).

When Redis goes away, Celery's consumer collects and then closes its broken connection.
Closing the channel puts the unacknowledged messages back (`QoS.restore_unacked`); by then
`Connection.collect()` has already cleared the transport's client, and kombu raises
AttributeError (not a connection error) while building a Redis client for the restore.
Celery calls that an unrecoverable error and the node stops: with tasks in flight, a Redis
restart took a refresh node down for good (tests/shop/test_outages.py, mid-run case).

Without a transport nothing can be restored at that moment. The messages are still where
kombu keeps every delivered one until its ack (Redis's unacked index), from which a consumer
restores them after the visibility timeout, as for any message whose ack never came; if
Redis came back empty they are gone, and the reconciler resumes their runs (core.runs).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

logger = logging.getLogger(__name__)
_MARK = "_shop_restore_unless_closed"


def install() -> bool:
    """Patch kombu's Redis QoS in this process; False if already done."""
    from kombu.transport import redis as kombu_redis

    qos = kombu_redis.QoS
    restore = qos.restore_unacked
    if getattr(restore, _MARK, False):
        return False

    @functools.wraps(restore)
    def restore_unless_closed(self: Any, client: Any = None) -> Any:
        transport = getattr(self.channel, "connection", None)
        if client is None and getattr(transport, "client", None) is None:
            logger.warning(
                "Connection closed: %d unacknowledged message(s) stay in the broker's "
                "unacked index and come back after the visibility timeout",
                len(self._delivered),
            )
            self._delivered.clear()  # as a restore does: the channel is being discarded
            return None
        return restore(self, client)

    setattr(restore_unless_closed, _MARK, True)
    qos.restore_unacked = restore_unless_closed
    return True
