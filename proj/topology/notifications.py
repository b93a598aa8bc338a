"""Notifications: transactional messages on their own queue, bulk campaigns on another.

Routing is by message kind. A person waits for a transactional message ("your report is
ready"), so it goes to `notifications`, consumed by the `notify` pool. Campaign work (the
fan-out and the batches that send over one SMTP connection) goes to `notifications.bulk`,
consumed by `notify_bulk`, which also takes `notifications` from the same -Q list: neither
pool sits idle while either queue has work, and no amount of bulk work can occupy the
`notify` pool's slots.
"""

from __future__ import annotations

from proj.topology.base import Pool, Queue

NOTIFY_QUEUE = "notifications"
BULK_QUEUE = "notifications.bulk"

QUEUES = (
    Queue(NOTIFY_QUEUE, "transactional messages a person is waiting for: seconds, never late"),
    Queue(BULK_QUEUE, "campaigns: fan-out and rate-limited batches, hundreds of thousands"),
)

ROUTES = {
    "notifications.tasks.notification_send": NOTIFY_QUEUE,
    "notifications.tasks.campaign_fan_out": BULK_QUEUE,
    "notifications.tasks.campaign_send_lane": BULK_QUEUE,
    "notifications.tasks.campaign_finish": BULK_QUEUE,
}

POOLS = (
    # One process: a transactional message is one short SMTP conversation, and 20 slots
    # that bulk work can never take are what keeps its latency flat during a campaign.
    Pool(
        "notify",
        (NOTIFY_QUEUE,),
        concurrency=20,
        processes=1,
        purpose="transactional email: its own node, never behind a campaign",
    ),
    # The provider's rate limit, not CPU, bounds bulk sending, and the limiter is shared
    # by every node (WORKER_PROCESSES_NOTIFY_BULK adds nodes without sending faster).
    # Bulk first in -Q; kombu then rotates between the two queues, so this pool helps with
    # transactional messages whenever a bulk task is not running.
    Pool(
        "notify_bulk",
        (BULK_QUEUE, NOTIFY_QUEUE),
        concurrency=10,
        processes=1,
        purpose="campaign batches over one SMTP connection each; helps with transactional",
    ),
)
