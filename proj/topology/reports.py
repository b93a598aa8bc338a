"""One queue and one prefork node per report type, found from the modules of reports/types/.

Report tasks get their type's queue on the signature the workflow builds
(reports/workflows.py), so they need no route here.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

from proj.topology.base import Pool, Queue

REPORT_QUEUE_PREFIX = "reports."
REPORT_TYPES_DIR = Path(__file__).resolve().parents[2] / "reports" / "types"


def report_identifiers() -> tuple[str, ...]:
    """Report types are the modules of reports/types/, found without importing Django."""
    found = pkgutil.iter_modules([str(REPORT_TYPES_DIR)])
    return tuple(sorted(m.name for m in found if not m.name.startswith("_")))


def report_queue(identifier: str) -> str:
    return f"{REPORT_QUEUE_PREFIX}{identifier}"


def report_slots(identifier: str) -> int:
    """How many parts of one report can run at once: its pool's nodes x slots."""
    pool = next(p for p in POOLS if p.name == f"reports_{identifier}")
    return (pool.processes or 1) * pool.concurrency


QUEUES = tuple(Queue(report_queue(i), f"the {i} report") for i in report_identifiers())

ROUTES: dict[str, str] = {}

POOLS = tuple(
    Pool(
        f"reports_{i}",
        (report_queue(i),),
        concurrency=2,
        pool="prefork",
        purpose=f"the {i} report: CPU-bound rendering, one node per type",
    )
    for i in report_identifiers()
)
