"""The building blocks of the topology: queues and worker pools. Imports nothing from Django."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Queue:
    name: str
    purpose: str


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Pool:
    """Worker nodes that consume the same queues the same way.

    `processes` nodes run the pool (`refresh1@host`, `refresh2@host`; a single node is just
    `<name>@host`), each with `concurrency` slots: greenlets for gevent, child processes
    for prefork. An I/O pool runs one process per CPU unless told otherwise, because one
    gevent process uses one core; WORKER_PROCESSES_<NAME> overrides it on a given host.
    """

    name: str
    queues: tuple[str, ...]
    concurrency: int
    # gevent for I/O-bound work; "prefork" only where the work is CPU-bound.
    pool: str = "gevent"
    processes: int | None = None
    purpose: str = ""
    # prefork: recycle a child after this many tasks / this much resident memory (KiB).
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    nodes: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        override = os.environ.get(f"WORKER_PROCESSES_{self.name.upper()}")
        if override:
            count = int(override)
        elif self.processes is not None:
            count = self.processes
        else:
            count = cpu_count() if self.pool == "gevent" else 1
        object.__setattr__(self, "processes", max(1, count))
        names = (
            (self.name,) if count <= 1 else tuple(f"{self.name}{i}" for i in range(1, count + 1))
        )
        object.__setattr__(self, "nodes", names)


@dataclass(frozen=True)
class QueueFamily:
    """Queues made and removed at run time from one declaration: `<prefix><key>`.

    A member is declared on the broker when it is first needed and every node of `pool`
    consumes it while it is active; nothing lists the members here, so the checks, the
    settings and the router know a member by its name alone (`owns`). At most `max_active`
    members are active at once; beyond that, keys share `overflow` hashed overflow queues
    (`<overflow_prefix><n>`). Both numbers are defaults the settings may override.
    """

    prefix: str
    pool: str
    purpose: str
    overflow_prefix: str
    max_active: int = 200
    overflow: int = 4

    def member(self, key: int | str) -> str:
        return f"{self.prefix}{key}"

    def overflow_queue(self, index: int) -> str:
        return f"{self.overflow_prefix}{index}"

    def owns(self, name: str) -> bool:
        """`imports.user.17` and `imports.overflow.2` are members; `imports.user.x` is not."""
        for prefix in (self.prefix, self.overflow_prefix):
            key = name[len(prefix) :] if name.startswith(prefix) else ""
            if key.isascii() and key.isdigit():
                return True
        return False
