"""Benchmark the product refresh: the naive design against the project's, side by side.

    .venv/bin/python bench/refresh.py [--products 2000] [--latency-ms 50] [--postgres]

Why: the README claims chunked tasks with in-task concurrency and no prefetching beat one
task per product on default worker settings. This measures both on the real stack (real
`celery worker` subprocesses, Redis, the database, the supplier stand-in over HTTP) in one
run, next to the ideal bound N x latency / concurrency, and prints a markdown table.

Everything is the bench's own: database var/bench/refresh.sqlite3 (recreated every run),
Redis DB 12 (flushed), the stand-in on a free port, workers named `*@bench-<pid>`. Workers
are restarted for each scenario so its settings apply, and stopped on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from proj import topology
from tests.support.workers import HOSTNAME, WorkerFleet

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var" / "bench"
SQLITE_PATH = VAR_DIR / "refresh.sqlite3"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_refresh"
BROKER_URL = "redis://127.0.0.1:6379/12"


@dataclass(frozen=True)
class Scenario:
    """One design to measure: how the run is chunked and how the workers are started."""

    key: str
    label: str
    chunk_size: int
    # Extra `celery worker` arguments for every node; they override proj.settings.
    worker_args: tuple[str, ...]
    settings_note: str


# Celery's defaults, restored on the command line: `--prefetch-multiplier 4`, and
# `worker.disable_prefetch=false` (a trailing key=value is read by config_from_cmdline;
# the `--disable-prefetch` flag can only turn it on, and proj.settings turns it on).
NAIVE = Scenario(
    key="naive",
    label="Naive: 1 product per task",
    chunk_size=1,
    worker_args=("--prefetch-multiplier", "4", "worker.disable_prefetch=false"),
    settings_note="prefetch multiplier 4, prefetch on",
)


def project_scenario(chunk_size: int, concurrency: int) -> Scenario:
    return Scenario(
        key="project",
        label=f"Project: {chunk_size} per task x {concurrency} requests",
        chunk_size=chunk_size,
        worker_args=(),
        settings_note="as shipped (prefetch multiplier 1, worker_disable_prefetch on Redis)",
    )


@dataclass
class Result:
    scenario: Scenario
    tasks: int
    concurrency: int
    ideal: float
    makespan: float | None  # None: the run never finished (see `stalled`)
    callback_lag: float | None
    publish: float  # run created -> first chunk started
    requests: tuple[float, float]  # run created -> first / last supplier request received
    last_product: float  # run created -> last product finished
    chord: float | None  # last product finished -> run finished (chord callback ran)
    status: str
    succeeded: int
    done: int
    stalled: str = ""
    incidents: dict[str, int] = field(default_factory=dict)
    worker_conf: dict[str, Any] = field(default_factory=dict)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=2000, help="N products (default 2000)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="stand-in latency")
    parser.add_argument("--postgres", action="store_true", help=f"use {POSTGRES_URL}")
    parser.add_argument(
        "--timeout", type=float, default=0.0, help="seconds per run (default 120 + N/10)"
    )
    parser.add_argument(
        "--stall-after",
        type=float,
        default=30.0,
        help="give a run up when no product finishes for this many seconds (default 30)",
    )
    parser.add_argument("--only", choices=("naive", "project"), help="run one scenario (debugging)")
    return parser.parse_args()


def configure_env(args: argparse.Namespace, stub_url: str) -> dict[str, str]:
    """Point this process and the workers at the bench's own DB, Redis DB and stand-in.

    Must run before django.setup(): settings are read from the environment once.
    """
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    env = {
        "DJANGO_SETTINGS_MODULE": "proj.settings",
        "SHOP_VAR_DIR": str(VAR_DIR),
        "DATABASE_URL": POSTGRES_URL if args.postgres else f"sqlite:///{SQLITE_PATH}",
        "CELERY_BROKER_URL": BROKER_URL,
        "SUPPLIER_API_URL": stub_url,
        "STATUS_CALLBACK_URL": f"{stub_url}/status",
        # Workers as in production: DEBUG off (no per-query logging in the workers).
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "localhost",
        "DJANGO_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    return dict(os.environ)


def prepare_database(postgres: bool) -> None:
    """A fresh schema each run, so earlier runs cannot slow this one down."""
    from django.core.management import call_command

    if postgres:
        import psycopg

        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = 'bench_refresh'"
            ).fetchone()
            if not exists:
                conn.execute("CREATE DATABASE bench_refresh")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("flush", interactive=False, verbosity=0)
        return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)
    call_command("migrate", interactive=False, verbosity=0)


def flush_broker() -> None:
    import redis

    redis.Redis.from_url(BROKER_URL).flushdb()


def refresh_fleet(app: Any, env: dict[str, str], scenario: Scenario) -> WorkerFleet:
    """The refresh and callbacks nodes, with the scenario's worker overrides."""
    fleet = WorkerFleet(app, env, VAR_DIR / "log" / f"refresh-{scenario.key}")
    fleet.start(
        tuple(p for p in topology.POOLS if p.name in ("refresh", "callbacks")),
        extra_args=scenario.worker_args,
    )
    return fleet


def effective_conf(fleet: WorkerFleet) -> dict[str, Any]:
    """What the refresh node actually runs with, read back from it, not assumed."""
    node = f"refresh@{HOSTNAME}"
    inspect = fleet.app.control.inspect(destination=[node], timeout=2)
    stats = (inspect.stats() or {}).get(node, {})
    conf = (inspect.conf(with_defaults=True) or {}).get(node, {})
    # --prefetch-multiplier does not show in conf; the initial prefetch count does.
    concurrency = stats.get("pool", {}).get("max-concurrency") or 0
    prefetch = stats.get("prefetch_count") or 0
    return {
        "pool": stats.get("pool", {}).get("implementation", "").rsplit(":", 1)[0],
        "concurrency": concurrency,
        "prefetch_count": prefetch,
        "prefetch_multiplier": prefetch // concurrency if concurrency else None,
        "worker_disable_prefetch": conf.get("worker_disable_prefetch"),
    }


def incidents(fleet: WorkerFleet) -> dict[str, int]:
    """Broker trouble the workers logged: why a run was slow, duplicated or stuck."""
    text = "".join(fleet.log_path(name).read_text() for name in ("refresh", "callbacks"))
    return {
        "failed acks": text.count("Couldn't ack"),
        "broker connection lost": text.count("Connection to broker lost"),
        "duplicate chord parts": text.count("delivered twice; counted once"),
    }


def create_products(count: int) -> list[int]:
    from decimal import Decimal

    from shop.demo import demo_sku
    from shop.models import Product

    Product.objects.bulk_create(
        (
            Product(sku=demo_sku(i), name=f"placeholder {i}", price=Decimal("1.00"))
            for i in range(1, count + 1)
        ),
        batch_size=1000,
    )
    return list(Product.objects.order_by("pk").values_list("pk", flat=True))


def reset_between_runs() -> None:
    """Same starting point for each scenario: stale products, no leftover chord state."""
    from decimal import Decimal

    from django_celery_results.models import ChordCounter, TaskResult

    from core.models import ChordPart
    from shop.models import Product

    Product.objects.update(last_refreshed_at=None, last_error="", price=Decimal("1.00"))
    TaskResult.objects.all().delete()
    ChordCounter.objects.all().delete()
    ChordPart.objects.all().delete()


def ideal_bound(
    n: int, latency: float, chunk_size: int, chunk_concurrency: int
) -> tuple[int, int, float]:
    """N x latency / concurrency: what the supplier's latency alone allows.

    Concurrency is 40 refresh slots; a chunked task also runs `chunk_concurrency` requests
    at once, but only as many tasks as there are chunks can be busy.
    """
    slots = next(p.concurrency for p in topology.POOLS if p.name == "refresh")
    tasks = math.ceil(n / chunk_size)
    per_task = min(chunk_concurrency, chunk_size)
    concurrency = min(slots, tasks) * per_task
    return tasks, concurrency, n * latency / concurrency


def timestamp(value: datetime | None) -> float:
    return value.timestamp() if value else float("nan")


def run_scenario(
    scenario: Scenario,
    *,
    product_ids: list[int],
    stub: Any,
    app: Any,
    env: dict[str, str],
    latency: float,
    timeout: float,
    stall_after: float,
) -> Result:
    """Fresh workers, one run, wait for the callback (or a stall), measure from the rows."""
    from django.conf import settings
    from django.db.models import Max

    from shop.models import RefreshRun
    from shop.supplier_stub import StubBehaviour
    from shop.workflows import refresh_start

    n = len(product_ids)
    per_task = settings.REFRESH_CHUNK_CONCURRENCY
    tasks, concurrency, ideal = ideal_bound(n, latency, scenario.chunk_size, per_task)
    print(f"\n== {scenario.label}: {n} products, {tasks} tasks ({scenario.settings_note})")
    reset_between_runs()
    stub.reset(StubBehaviour(latency=latency))  # forget the previous scenario's requests
    flush_broker()
    fleet = refresh_fleet(app, env, scenario)
    try:
        conf = effective_conf(fleet)
        print(f"   refresh node runs with: {conf}")
        run = refresh_start(
            product_ids=product_ids,
            trigger=RefreshRun.Trigger.COMMAND,
            chunk_size=scenario.chunk_size,
        )
        started = time.monotonic()
        last_print = last_change = 0.0
        last_done, stalled = -1, ""
        while True:
            run.refresh_from_db()
            elapsed = time.monotonic() - started
            if run.is_finished and run.callback_status != "sending":
                break
            if run.done != last_done:
                last_done, last_change = run.done, elapsed
            if elapsed - last_print >= 2:
                print(f"   {elapsed:6.1f} s  {run.done}/{run.total} done  ({run.status})")
                last_print = elapsed
            if elapsed - last_change > stall_after or elapsed > timeout:
                stalled = (
                    f"{run.done}/{run.total} products done, then nothing for "
                    f"{elapsed - last_change:.0f} s"
                )
                print(f"   gave up: {stalled}")
                break
            time.sleep(0.25)
        if not stalled:
            print(f"   {time.monotonic() - started:6.1f} s  finished: {run.status}, "
                  f"callback {run.callback_status!r}")  # fmt: skip
        created = run.created_at.timestamp()
        callbacks = [c for c in stub.callbacks() if c.json().get("run") == run.pk]
        received = callbacks[0].received_at if callbacks else None
        if not callbacks and not stalled:
            stalled = f"run {run.status}, but the stand-in received no callback"
        asked = [r.received_at - created for r in stub.product_requests()] or [float("nan")]
        last_item = timestamp(run.items.aggregate(last=Max("finished_at"))["last"])
        finished = timestamp(run.finished_at) if run.finished_at else None
        result = Result(
            scenario=scenario,
            tasks=tasks,
            concurrency=concurrency,
            ideal=ideal,
            makespan=received - created if received else None,
            callback_lag=received - last_item if received else None,
            publish=timestamp(run.started_at) - created,
            requests=(min(asked), max(asked)),
            last_product=last_item - created,
            chord=finished - last_item if finished else None,
            status=run.status,
            succeeded=run.succeeded,
            done=run.done,
            stalled=stalled,
            worker_conf=conf,
        )
    finally:
        fleet.stop()
    # Read once the workers have stopped, so their logs are complete.
    result.incidents = incidents(fleet)
    print(f"   worker logs: {result.incidents}")
    return result


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def machine() -> str:
    import celery
    import django

    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.platform()}, Django {django.get_version()}, Celery {celery.__version__}"
    )


def report(results: list[Result], *, n: int, latency: float, database: str) -> str:
    """The markdown block for the README: one row per design, then the ratios."""
    lines = [
        f"Refresh of {n:,} products, supplier stand-in at {latency * 1000:g} ms, "
        f"{database} + Redis, refresh pool gevent x40, callbacks pool gevent x20.",
        "",
        "| Design | Tasks | Worker settings | Ideal concurrency | Ideal (s) "
        "| Makespan (s) | Makespan / ideal | Callback lag (s) | Broker incidents |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        incidents = ", ".join(f"{v} {k}" for k, v in r.incidents.items() if v) or "none"
        if r.makespan is None:
            makespan, ratio = f"did not finish: {r.stalled}", "-"
        else:
            makespan, ratio = f"{r.makespan:.2f}", f"{r.makespan / r.ideal:.1f}x"
        lines.append(
            f"| {r.scenario.label} | {r.tasks:,} | {r.scenario.settings_note} "
            f"| {r.concurrency} | {r.ideal:.2f} | {makespan} | {ratio} "
            f"| {seconds(r.callback_lag)} | {incidents} |"
        )
    by_key = {r.scenario.key: r for r in results}
    naive, project = by_key.get("naive"), by_key.get("project")
    if naive and project and naive.makespan and project.makespan:
        lines += [
            "",
            f"Naive / project makespan: **{naive.makespan / project.makespan:.1f}x**; "
            f"project / ideal: {project.makespan / project.ideal:.1f}x; "
            f"naive / ideal: {naive.makespan / naive.ideal:.1f}x.",
        ]
    lines += [
        "",
        "Makespan: run created -> status callback received by the stand-in. Ideal: "
        "N x latency / concurrency. Callback lag: last product finished -> callback received.",
        "",
        f"Machine: {machine()}.",
    ]
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(BASE_DIR))
    latency = args.latency_ms / 1000
    # The stand-in binds its port on construction, so its URL is known before settings load.
    from shop.supplier_stub import StubBehaviour, SupplierStub

    stub = SupplierStub(StubBehaviour(latency=latency), host="127.0.0.1", port=0)
    env = configure_env(args, stub.server.url)

    import django

    django.setup()
    from django.conf import settings

    from proj.celery import app

    # Ctrl-C and `kill` both unwind through the finally blocks that stop the workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stub.server.start()
    database = "PostgreSQL" if args.postgres else "SQLite"
    timeout = args.timeout or 120 + args.products / 10
    try:
        print(f"Preparing {database} ({env['DATABASE_URL']}), Redis {BROKER_URL}, "
              f"stand-in {stub.server.url} at {args.latency_ms:g} ms")  # fmt: skip
        prepare_database(args.postgres)
        flush_broker()
        product_ids = create_products(args.products)
        project = project_scenario(settings.REFRESH_CHUNK_SIZE, settings.REFRESH_CHUNK_CONCURRENCY)
        scenarios = [s for s in (NAIVE, project) if args.only in (None, s.key)]
        results = [
            run_scenario(
                s,
                product_ids=product_ids,
                stub=stub,
                app=app,
                env=env,
                latency=latency,
                timeout=timeout,
                stall_after=args.stall_after,
            )
            for s in scenarios
        ]
    except KeyboardInterrupt:
        print("\nInterrupted; workers stopped.", file=sys.stderr)
        return 130
    finally:
        stub.server.stop()
    for r in results:
        print(f"\n{r.scenario.label}: {r.succeeded}/{args.products} succeeded ({r.status}); "
              f"from run created: first chunk started {r.publish:.2f} s, supplier requests "
              f"{r.requests[0]:.2f}-{r.requests[1]:.2f} s, last product finished "
              f"{r.last_product:.2f} s; last product -> run finished (chord) "
              f"{seconds(r.chord)} s")  # fmt: skip
    text = report(results, n=args.products, latency=latency, database=database)
    print("\n" + text)
    failed = [r for r in results if r.makespan is None or r.succeeded != args.products]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
