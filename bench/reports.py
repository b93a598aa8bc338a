"""Benchmark the reports: isolation under a flood, and a year's sales summary at scale.

    .venv/bin/python bench/reports.py [--flood 10] [--orders 200000] [--database postgres]
                                      [--only flood|scale]

Flood (side by side, one run, 2,000 orders over a year):
  control     the project's topology (one queue and one prefork node per type), an
              inventory report with nothing else queued;
  dedicated   the same, with --flood year-long sales summaries queued first on
              reports.sales_summary, then the inventory report;
  shared      the naive way: every report task on ONE queue, one worker with the same
              total concurrency, same flood, then the inventory report;
  shared-ctl  the naive way without a flood (its own control).
For the inventory report: how long it waited for a worker and its turnaround.

Scale (--orders orders over a year, ~2 lines each; 0 skips it): a year's sales summary
  single pass  the same per-day and per-product aggregates as two plain queries in this
               process, then the merge (no tasks): what splitting must beat;
  shipped      the report as it runs: parts sized from the data (REPORTS_MIN_ORDERS_PER_PART,
               at most one per slot of the type's pool), gathered by the real workers;
  weekly       the earlier design: 53 weekly parts, whatever the data.
Gather time is run created -> last part gathered; turnaround adds the CSV and PDF render.

Everything is the bench's own: a redis-server on a free port (PrivateRedis), SQLite files
under var/bench/reports/ (the scale database is kept and reused for the same --orders) or
the PostgreSQL database bench_reports, the report nodes as the Procfile runs them.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DIR = BASE_DIR / "var" / "bench" / "reports"
sys.path.insert(0, str(BASE_DIR))

SHARED_QUEUE = "reports.shared"
SHARED_NODE = "reports_shared@bench-reports"
HOSTNAME = "bench-reports"
FLOOD_ORDERS = 2000
POSTGRES_DB = "bench_reports"


def year() -> dict[str, str]:
    """The last full year of data: seed() places orders over the 365 days before now."""
    from datetime import date, timedelta

    today = date.today()
    return {"date_from": (today - timedelta(days=365)).isoformat(), "date_to": today.isoformat()}


def configure(broker: str, database: str) -> dict[str, str]:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="proj.settings", DJANGO_DEBUG="1", SHOP_VAR_DIR=str(BENCH_DIR),
        DATABASE_URL=database, CELERY_BROKER_URL=broker, DJANGO_LOG_LEVEL="WARNING",
        SHOP_ENV_FILE=os.devnull, REPORTS_MAX_RANGE_DAYS="366",
    )  # fmt: skip
    return dict(os.environ)


def database_url(kind: str, name: str, fresh: bool) -> str:
    """A database of the bench's own; `fresh` empties it first."""
    if kind == "postgres":
        import psycopg

        db = f"{POSTGRES_DB}_{name}"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
            exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db]).fetchone()
            if fresh or not exists:
                c.execute(f"DROP DATABASE IF EXISTS {db}")
                c.execute(f"CREATE DATABASE {db}")
        return f"postgres://postgres@127.0.0.1:5432/{db}"
    path = BENCH_DIR / f"{name}.sqlite3"
    if fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def use_shared_queue(app: Any) -> None:
    """The naive design: every report task on one queue (this process only)."""
    from kombu import Queue

    from reports import registry

    # The workflow sets each signature's queue from the type; the naive design has one.
    registry.ReportType.queue = property(lambda self: SHARED_QUEUE)  # type: ignore[assignment]
    app.conf.task_routes = ({"reports.tasks.*": {"queue": SHARED_QUEUE}},)
    app.conf.task_queues = (*app.conf.task_queues, Queue(SHARED_QUEUE, routing_key=SHARED_QUEUE))
    for cached in ("queues", "router"):
        app.amqp.__dict__.pop(cached, None)
    app.amqp.flush_routes()


def shared_worker_main(concurrency: int) -> None:
    """`--shared-worker`: one prefork worker consuming the single shared queue."""
    import django

    django.setup()
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
    run, _ = workflows.report_run_request(report_type=identifier, params=params, trigger="cron")
    return run


def finished(run: Any, timeout: float) -> Any:
    def done() -> bool:
        run.refresh_from_db()
        return run.finished_at is not None

    wait(done, timeout, f"report run #{run.pk}")
    return run


# --- flood --------------------------------------------------------------------------------
def measure_flood(flood: int, timeout: float = 600) -> dict[str, Any]:
    """Queue `flood` sales reports, wait until their node is busy, then time an inventory."""
    from reports.models import ReportRun

    runs = [request("sales_summary", year()) for _ in range(flood)]
    if runs:
        ids = [r.pk for r in runs]
        wait(
            lambda: ReportRun.objects.filter(pk__in=ids, status="running").exists(),
            60,
            "the flood to start",
        )
    probe = finished(request("inventory", {}), timeout)
    unfinished = ReportRun.objects.filter(
        pk__in=[r.pk for r in runs], finished_at__isnull=True
    ).count()
    for run in runs:  # the next scenario starts from an empty queue
        finished(run, timeout)
    return {
        "queue": probe.queue,
        "wait": (probe.started_at - probe.created_at).total_seconds(),
        "turnaround": (probe.finished_at - probe.created_at).total_seconds(),
        "flood_unfinished": unfinished,
        "flood": flood,
    }


def bench_flood(args: argparse.Namespace, broker: Any) -> None:
    env = configure(broker.url, database_url(args.database, "flood", fresh=True))
    import django

    django.setup()
    from django.core.management import call_command

    from core.fleet import WorkerFleet
    from devtools import demo
    from proj import topology
    from proj.celery import app

    call_command("migrate", verbosity=0)
    demo.seed(products=200, orders=FLOOD_ORDERS, days=365)
    pools = tuple(p for p in topology.POOLS if p.name.startswith("reports_"))
    rows: list[tuple[str, dict[str, Any]]] = []

    fleet = WorkerFleet(app, env, BENCH_DIR / "log", HOSTNAME)
    fleet.start(pools)
    try:
        measure_flood(0)  # warm-up: imports, connections (not shown)
        rows.append(("control (own queues, no flood)", measure_flood(0)))
        rows.append((f"dedicated queues, flood of {args.flood}", measure_flood(args.flood)))
    finally:
        fleet.stop()
    broker.client().flushdb()

    use_shared_queue(app)
    slots = sum((p.processes or 1) * p.concurrency for p in pools)
    with open(BENCH_DIR / "log" / "reports_shared.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--shared-worker", str(slots)], cwd=BASE_DIR, env=env,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait(lambda: app.control.ping(destination=[SHARED_NODE], timeout=0.5), 60, "shared node")
        measure_flood(0)
        rows.append(("shared queue, no flood", measure_flood(0)))
        rows.append((f"shared queue, flood of {args.flood}", measure_flood(args.flood)))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()

    print(f"\nInventory report while sales summaries flood ({args.database}, "
          f"cpus {os.cpu_count()}, {FLOOD_ORDERS} orders over a year)\n")  # fmt: skip
    print(f"{'scenario':<34} {'queue':<18} {'wait s':>8} {'turnaround s':>13} {'flood left':>11}")
    for name, r in rows:
        print(
            f"{name:<34} {r['queue']:<18} {r['wait']:>8.3f} {r['turnaround']:>13.3f} "
            f"{r['flood_unfinished']:>5}/{r['flood']:<5}"
        )
    control, dedicated, shared_ctl, shared = (r for _, r in rows)
    print(
        f"\nturnaround under the flood / without: dedicated "
        f"{dedicated['turnaround'] / control['turnaround']:.2f}x, shared "
        f"{shared['turnaround'] / shared_ctl['turnaround']:.1f}x"
    )


# --- scale --------------------------------------------------------------------------------
def single_pass(params: dict[str, Any]) -> float:
    """The two aggregates over the whole range in this process, merged: no tasks."""
    from reports import registry

    kind = registry.get("sales_summary")
    typed = kind.parse_params(params)
    part = {"from": typed["date_from"].isoformat(), "to": typed["date_to"].isoformat()}
    started = time.perf_counter()
    kind.combine(typed, [kind.gather(typed, part)])
    return time.perf_counter() - started


def measure_report(params: dict[str, Any], timeout: float = 900) -> dict[str, float]:
    from django.db.models import Max

    run = finished(request("sales_summary", params), timeout)
    assert run.status == "succeeded", run.error
    gathered = run.items.aggregate(at=Max("finished_at"))["at"]
    return {
        "parts": run.total,
        "gather": (gathered - run.created_at).total_seconds(),
        "turnaround": (run.finished_at - run.created_at).total_seconds(),
    }


def bench_scale(args: argparse.Namespace, broker: Any) -> None:
    env = configure(broker.url, database_url(args.database, f"scale_{args.orders}", fresh=False))
    import django

    django.setup()
    from django.core.management import call_command

    from core.fleet import WorkerFleet
    from devtools import demo
    from proj.celery import app
    from reports import registry
    from reports.registry import date_windows
    from shop.models import Order, OrderLine

    call_command("migrate", verbosity=0)
    if Order.objects.count() != args.orders:
        if Order.objects.exists():
            raise SystemExit(f"{env['DATABASE_URL']} holds other data: delete it and run again")
        started = time.monotonic()
        demo.seed(products=500, orders=args.orders, days=365)
        print(f"seeded {args.orders} orders in {time.monotonic() - started:.0f} s")
    lines = OrderLine.objects.count()
    params = year()

    kind = registry.get("sales_summary")
    fleet = WorkerFleet(app, env, BENCH_DIR / "log", HOSTNAME)
    fleet.start((fleet.pool("reports_sales_summary"),))
    rows: dict[str, list[dict[str, float]]] = {"single pass": [], "shipped": [], "weekly": []}
    try:
        single_pass(params)  # warm the page cache: every design reads warm data
        measure_report(params)
        for _ in range(args.repeat):
            t = single_pass(params)
            rows["single pass"].append({"parts": 1, "gather": t, "turnaround": t})
            rows["shipped"].append(measure_report(params))
            shipped_plan = kind.plan
            kind.plan = lambda p: date_windows(p["date_from"], p["date_to"], 7)  # type: ignore[method-assign]
            try:
                rows["weekly"].append(measure_report(params))
            finally:
                kind.plan = shipped_plan  # type: ignore[method-assign]
    finally:
        fleet.stop()

    print(f"\nA year's sales summary ({args.database}, cpus {os.cpu_count()}, "
          f"{args.orders} orders, {lines} lines, median of {args.repeat})\n")  # fmt: skip
    base = statistics.median(r["gather"] for r in rows["single pass"])
    print(f"{'design':<14} {'parts':>6} {'gather s':>9} {'/ single':>9} {'turnaround s':>13}")
    for name, results in rows.items():
        gather = statistics.median(r["gather"] for r in results)
        turnaround = statistics.median(r["turnaround"] for r in results)
        parts = int(results[0]["parts"])
        print(f"{name:<14} {parts:>6} {gather:>9.2f} {gather / base:>8.2f}x {turnaround:>13.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=10, help="sales reports in the flood")
    parser.add_argument("--orders", type=int, default=200_000, help="orders for the scale part")
    parser.add_argument("--repeat", type=int, default=3, help="scale measurements per design")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--only", choices=("flood", "scale"))
    parser.add_argument("--shared-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shared_worker:
        shared_worker_main(args.shared_worker)
        return

    from devtools.redis_server import PrivateRedis

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    broker = PrivateRedis(BENCH_DIR / "redis")
    broker.start()
    try:
        # One part per process: Django is set up once per process, on one database.
        for part in ("flood", "scale"):
            if args.only in (None, part) and not (part == "scale" and args.orders == 0):
                cmd = [sys.executable, __file__, "--only", part, "--database", args.database,
                       "--flood", str(args.flood), "--orders", str(args.orders),
                       "--repeat", str(args.repeat), "--broker", broker.url]  # fmt: skip
                subprocess.run(cmd, check=True, cwd=BASE_DIR)
    finally:
        broker.stop()


class Broker:
    """The parent's private redis-server, seen from a part's process."""

    def __init__(self, url: str) -> None:
        self.url = url

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)


def run_part() -> None:
    """`--only PART --broker URL`: one part in this process, on the given broker."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--flood", type=int)
    parser.add_argument("--orders", type=int)
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--database")
    parser.add_argument("--only")
    parser.add_argument("--broker")
    args = parser.parse_args()
    (bench_flood if args.only == "flood" else bench_scale)(args, Broker(args.broker))


if __name__ == "__main__":
    if "--broker" in sys.argv:
        run_part()
    else:
        main()
