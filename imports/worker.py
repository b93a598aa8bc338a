"""An imports node consumes every active user queue before it takes any work.

Queues added at run time live in the worker's memory: a node that restarts would forget
them (celery#1048, #987) and strand the users whose work waits there. This handler runs
after `-Q` is applied and before the consumer starts, and adds every active queue of the
registry to what the node consumes; Celery keeps them across broker reconnects (they are
in `consume_from`). Nodes of other pools are left alone (celery#3399).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import celeryd_after_setup
from celery.worker.control import control_command
from django.db import DatabaseError, connections

logger = logging.getLogger("imports.worker")


def is_imports_node(app: Any) -> bool:
    """A node of the imports pool consumes its own queue; only those get user queues."""
    from imports.fair import family_pool

    return set(family_pool().queues) <= set(app.amqp.queues.consume_from)


@celeryd_after_setup.connect
def consume_active_user_queues(sender: str, instance: Any, **kwargs: Any) -> None:
    from imports.models import ImportQueue

    queues = instance.app.amqp.queues
    if not is_imports_node(instance.app):
        return  # not a node of the imports pool
    try:
        names = list(
            ImportQueue.objects.filter(state=ImportQueue.State.ACTIVE).values_list(
                "name", flat=True
            )
        )
    except DatabaseError as exc:
        logger.warning(
            "Could not read the active user queues (%s); the reconciler will add them.", exc
        )
        return
    finally:
        connections.close_all()  # nothing opened here may cross into pool processes
    for name in names:
        queues.select_add(queues[name])
    logger.info(
        "%s consumes %d active user queue(s) from the registry before taking work: %s",
        sender, len(names), ", ".join(names) or "-",
    )  # fmt: skip


@control_command(args=[("queues", str)], signature="<queue>[,<queue>...]")
def imports_consume(state: Any, queues: str | list[str], **kwargs: Any) -> dict[str, str]:
    """Consume several user queues in one step (queues_sync sends this, one per node).

    Celery's add_consumer takes one queue per round trip: with many users starting at
    once, the first queues added took every slot for seconds before the last were
    consumed. Added together, they all enter the node's round robin at the same moment.
    """
    names = queues.split(",") if isinstance(queues, str) else list(queues)
    consumer = state.consumer
    if not is_imports_node(consumer.app):
        return {"error": "not a node of the imports pool"}  # celery#3399

    def add_all() -> None:
        for name in names:
            consumer.add_task_queue(name)

    consumer.call_soon(add_all)
    return {"ok": f"consuming {len(names)} more queue(s)"}
