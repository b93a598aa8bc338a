"""Benchmark: does a flood of one report type delay a report of another type?

    .venv/bin/python bench/reports.py [--flood 10] [--products 200] [--orders 300]

Side by side, in one run, against the same data (own SQLite file in var/bench, Redis DB 13):

  control     the project's topology (one queue and one prefork x2 node per type),
              an inventory report with nothing else queued;
  dedicated   the same, with --flood year-long sales summaries (53 parts each) queued
              first on reports.sales_summary, then the inventory report;
  shared      the naive way: every report task on ONE queue, one worker with the same
              total concurrency (3 types x 2 = 6), same flood, then the inventory report;
  shared-ctl  the naive way without a flood (its own control).

For the inventory report it prints how long it waited for a worker (started - created)
and its turnaround (finished - created), and the ratios. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DIR = BASE_DIR / "var" / "bench"
SHARED_QUEUE = "reports.shared"
SHARED_NODE = "reports_shared@bench"
YEAR = {"date_from": "2025-01-01", "date_to": "2025-12-31"}


def configure_env() -> dict[str, str]:
    """Everything this bench touches is its own: SQLite file, private dir, Redis DB 13."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")  # a local run: development defaults apply
    os.environ.setdefault("SHOP_VAR_DIR", str(BENCH_DIR))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{BENCH_DIR / 'reports.sqlite3'}")
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/13")
    os.environ.setdefault("DJANGO_LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(BASE_DIR))
    return dict(os.environ)


def use_shared_queue(app: Any) -> None:
    """The naive design: route every report task to one queue (this process only)."""
    from kombu import Queue

    app.conf.task_routes = ({"reports.tasks.*": {"queue": SHARED_QUEUE}},)
    app.conf.task_queues = (*app.conf.task_queues, Queue(SHARED_QUEUE, routing_key=SHARED_QUEUE))
    for cached in ("queues", "router"):
        app.amqp.__dict__.pop(cached, None)
    app.amqp.flush_routes()


def shared_worker_main(concurrency: int) -> None:
    """`--shared-worker`: one prefork worker consuming the single shared queue."""
    configure_env()
    from proj.celery import app

    use_shared_queue(app)
    app.worker_main(
        ["worker", "-n", SHARED_NODE, "-l", "WARNING", "-Q", SHARED_QUEUE, "-P", "prefork",
         "-c", str(concurrency), "-O", "fair"]
    )  # fmt: skip


def wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"Timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return value


def request(identifier: str, data: dict[str, str]) -> Any:
    from reports import registry, workflows

    params = registry.get(identifier).clean_params(data)
    return workflows.report_run_request(report_type=identifier, params=params, trigger="command")


def measure(flood: int, timeout: float = 300) -> dict[str, Any]:
    """Queue `flood` sales reports, wait until their node is busy, then time an inventory."""
    from reports.models import ReportRun

    runs = [request("sales_summary", YEAR) for _ in range(flood)]
    if runs:
        wait(
            lambda: ReportRun.objects.filter(
                pk__in=[r.pk for r in runs], status="running"
            ).exists(),
            60,
            "the flood to start",
        )
    probe = request("inventory", {})

    def finished() -> Any:
        probe.refresh_from_db()
        return probe.is_finished

    wait(finished, timeout, "the inventory report")
    pending = ReportRun.objects.filter(
        pk__in=[r.pk for r in runs], status__in=["pending", "running"]
    ).count()
    return {
        "status": probe.status,
        "queue": probe.queue,
        "wait": probe.waited.total_seconds(),
        "turnaround": (probe.finished_at - probe.created_at).total_seconds(),
        "flood_unfinished": pending,
        "flood": flood,
        "flood_tasks": sum(r.parts_total + 2 for r in runs),
    }


def flush_broker() -> None:
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=10, help="sales reports in the flood")
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--shared-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    env = configure_env()
    from proj import topology

    pools = tuple(p for p in topology.POOLS if p.name.startswith("reports_"))
    report_pools_concurrency = sum(p.concurrency for p in pools)
    if args.shared_worker:
        shared_worker_main(report_pools_concurrency)
        return

    import django

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    django.setup()
    from django.core.management import call_command

    from core.fleet import WorkerFleet
    from devtools import demo
    from proj.celery import app

    call_command("migrate", verbosity=0)
    demo.seed(products=args.products, orders=args.orders, days=365)
    flush_broker()
    rows: list[tuple[str, dict[str, Any]]] = []

    # The project's way: each report type on its own queue and node.
    fleet = WorkerFleet(app, env, BENCH_DIR / "log")
    fleet.start(pools)
    try:
        rows.append(("control (own queues, no flood)", measure(0)))
        rows.append((f"dedicated queues, flood of {args.flood}", measure(args.flood)))
    finally:
        fleet.stop()
    flush_broker()

    # The naive way: one queue for every report type, same total concurrency.
    use_shared_queue(app)
    log = open(BENCH_DIR / "log" / "reports_shared.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, __file__, "--shared-worker"], cwd=BASE_DIR, env=env, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait(lambda: app.control.ping(destination=[SHARED_NODE], timeout=0.5), 60, "shared node")
        rows.append(("shared queue, no flood", measure(0)))
        rows.append((f"shared queue, flood of {args.flood}", measure(args.flood)))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        flush_broker()

    print(f"\nInventory report while sales summaries flood (cpus: {os.cpu_count()}, "
          f"{args.products} products, {args.orders} orders, "
          f"{rows[1][1]['flood_tasks']} flood tasks)\n")  # fmt: skip
    print(f"{'scenario':<34} {'queue':<18} {'wait s':>8} {'turnaround s':>13} {'flood left':>11}")
    for name, r in rows:
        print(
            f"{name:<34} {r['queue']:<18} {r['wait']:>8.3f} {r['turnaround']:>13.3f} "
            f"{r['flood_unfinished']:>5}/{r['flood']:<5}"
        )
    control, dedicated, shared_ctl, shared = (r for _, r in rows)
    print("\nratios (turnaround):")
    print(
        f"  dedicated flood / control       {dedicated['turnaround'] / control['turnaround']:8.2f}x"
    )
    print(
        f"  shared flood / shared control   {shared['turnaround'] / shared_ctl['turnaround']:8.2f}x"
    )
    print(
        f"  shared flood / dedicated flood  {shared['turnaround'] / dedicated['turnaround']:8.2f}x"
    )


if __name__ == "__main__":
    main()
