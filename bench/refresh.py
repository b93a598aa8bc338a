"""Benchmark the product refresh: the naive design against the project's, side by side.

    .venv/bin/python bench/refresh.py [--products 2000 10000] [--latency-ms 50]
                                      [--database sqlite|postgres] [--only naive|project]
                                      [--warmup 1000] [--profile]

What it measures, for each design and size, on the real stack (real `celery worker`
nodes as the topology runs them, Redis, the database, the supplier stand-in over HTTP):
makespan (run created -> status callback received), the ideal bound N x latency /
concurrency, the CPU seconds of the workers and of the stand-in, CPU per product, the CPU
floor (worker CPU / cores: on a small machine this, not the network, is the bound),
makespan / max(ideal, floor), the machine's busy CPU over the run (every process,
the database server's included) and makespan / (that / cores), the most requests the
stand-in ever had in flight, and the callback lag (last product finished -> callback received).

Each design's nodes first refresh `--warmup` products (1,000) unmeasured: nodes that have
been running have their database and HTTP connections open, a freshly started one opens
them during its first tasks.

Nothing shared is touched: the broker is a redis-server of the bench's own on a free port
(or BENCH_BROKER_URL, which it flushes: give it a Redis DB that is yours), the database is
var/bench/refresh.sqlite3 (or BENCH_DATABASE_URL / postgres://.../bench_refresh with
--database postgres), the stand-in runs as its own process on a free port (so its CPU is
counted apart), and workers are named `*@bench-<pid>`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
from core.fleet import WorkerFleet  # noqa: E402
from devtools.redis_server import PrivateRedis, free_port  # noqa: E402
from proj import topology  # noqa: E402

VAR_DIR = BASE_DIR / "var" / "bench"
SQLITE_URL = f"sqlite:///{VAR_DIR / 'refresh.sqlite3'}"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_refresh"
# Where a local PostgreSQL keeps its postmaster's pid (Debian's default cluster).
PG_PIDFILE = os.environ.get("BENCH_PG_PIDFILE", "/var/run/postgresql/15-main.pid")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    chunk_size: int
    # Extra `celery worker` arguments for every node; they override proj.settings.
    worker_args: tuple[str, ...]
    note: str


# One task per product with Celery's defaults restored on the command line: prefetch
# multiplier 4 and prefetch on (`worker.disable_prefetch=false` is read by
# config_from_cmdline; the flag form can only turn it on, and proj.settings turns it on).
NAIVE = Scenario(
    "naive", "Naive: 1 product per task", 1,
    ("--prefetch-multiplier", "4", "worker.disable_prefetch=false"),
    "prefetch x4, prefetch on",
)  # fmt: skip


def project_scenario(chunk_size: int, concurrency: int) -> Scenario:
    return Scenario(
        "project", f"Project: {chunk_size} per task x {concurrency} requests", chunk_size, (),
        "as shipped",
    )  # fmt: skip


@dataclass
class Result:
    scenario: Scenario
    n: int
    tasks: int
    concurrency: int
    ideal: float
    makespan: float | None
    worker_cpu: float
    standin_cpu: float
    machine_cpu: float
    database_cpu: float | None
    broker_cpu: float | None  # the bench's own redis-server (None: BENCH_BROKER_URL)
    bench_cpu: float  # this process: creating the run, polling it
    peak_in_flight: int
    callback_lag: float | None
    finish_lag: float | None  # last product finished -> the run recorded finished
    status: str
    succeeded: int

    @property
    def floor(self) -> float:
        return self.worker_cpu / topology.cpu_count()

    @property
    def machine_floor(self) -> float:
        """What the whole machine's CPU allows: the database server shares the cores."""
        return self.machine_cpu / topology.cpu_count()

    @property
    def bound(self) -> float:
        return max(self.ideal, self.floor)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--only", choices=("naive", "project"))
    parser.add_argument("--profile", action="store_true", help="py-spy every worker node")
    parser.add_argument("--warmup", type=int, default=1000,
                        help="products refreshed before the measured run, 0: none")  # fmt: skip
    parser.add_argument("--stall-after", type=float, default=60.0,
                        help="give a run up when no product finishes for this long")  # fmt: skip
    return parser.parse_args()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process, from /proc (children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_cpu_seconds() -> float:
    """Busy CPU of the whole machine (every process: workers, stand-in, Redis, the database
    server, this bench), from /proc/stat: user, nice, system, irq, softirq, steal."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


def database_cpu_seconds(database: str) -> float | None:
    """CPU of a local PostgreSQL server: its postmaster, the backends it reaped, the live
    ones. None for SQLite (it runs inside the workers) or a server this bench cannot see."""
    if database != "postgres":
        return None
    try:
        postmaster = int(Path(PG_PIDFILE).read_text().split()[0])
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
        total = sum(int(f) for f in fields[11:15]) / TICKS  # utime, stime, cutime, cstime
        for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
            with contextlib.suppress(OSError):  # a backend that just ended
                total += cpu_seconds(int(child))
    except (OSError, ValueError, IndexError):
        return None
    return total


def configure(args: argparse.Namespace, broker: str, stub_url: str) -> dict[str, str]:
    """This process's and the workers' environment: production-like, the bench's own."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    default_db = POSTGRES_URL if args.database == "postgres" else SQLITE_URL
    env = {
        "DJANGO_SETTINGS_MODULE": "proj.settings",
        "SHOP_ENV_FILE": "/dev/null",
        "SHOP_VAR_DIR": str(VAR_DIR),
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", default_db),
        "CELERY_BROKER_URL": broker,
        "SUPPLIER_API_URL": stub_url,
        "STATUS_CALLBACK_URL": f"{stub_url}/status",
        "DJANGO_DEBUG": "0",  # workers as in production: no per-query logging
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "localhost",
        "DJANGO_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    return dict(os.environ)


def prepare_database(url: str) -> None:
    """A fresh schema, so earlier runs cannot slow this one down."""
    from django.core.management import call_command

    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        import psycopg

        name = url.rsplit("/", 1)[1]
        admin = url.rsplit("/", 1)[0].replace("postgres://", "postgresql://") + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
    call_command("migrate", interactive=False, verbosity=0)
    call_command("flush", interactive=False, verbosity=0)


class StandIn:
    """`manage.py <kind>_stub` in its own process (its CPU counted apart), on a port chosen
    up front: the supplier's, or the warehouse's and carrier's (bench/fulfilment.py)."""

    def __init__(
        self, port: int, latency_ms: float, env: dict[str, str], kind: str = "supplier"
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "manage.py", f"{kind}_stub", "--port", str(port),
                "--latency-ms", str(latency_ms)]  # fmt: skip
        # The stand-in lives in devtools, which only DEBUG or SHOP_DEVTOOLS install.
        self.proc = subprocess.Popen(
            argv, cwd=BASE_DIR, env={**env, "SHOP_DEVTOOLS": "1"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"the {kind} stand-in did not start") from None
                time.sleep(0.1)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as answer:
            return json.load(answer)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def ideal_bound(n: int, latency: float, chunk_size: int, per_task: int) -> tuple[int, int, float]:
    """N x latency / concurrency: what the supplier's latency alone would allow."""
    refresh = next(p for p in topology.POOLS if p.name == "refresh")
    slots = refresh.concurrency * refresh.processes
    tasks = math.ceil(n / chunk_size)
    concurrency = min(slots, tasks) * min(per_task, chunk_size)
    return tasks, concurrency, n * latency / concurrency


def run_one(
    scenario: Scenario,
    n: int,
    *,
    app: Any,
    env: dict[str, str],
    args: argparse.Namespace,
    broker_pid: int | None,
) -> Result:
    from decimal import Decimal

    from django.conf import settings
    from django.db.models import Max

    from shop.models import Product

    latency = args.latency_ms / 1000
    tasks, concurrency, ideal = ideal_bound(
        n, latency, scenario.chunk_size, settings.REFRESH_CHUNK_CONCURRENCY
    )
    print(f"\n== {scenario.label}: {n:,} products, {tasks:,} tasks ({scenario.note})", flush=True)
    ids = list(Product.objects.order_by("pk").values_list("pk", flat=True)[:n])
    stub = StandIn(int(env["SUPPLIER_API_URL"].rsplit(":", 1)[1]), args.latency_ms, env)
    fleet = WorkerFleet(app, env, VAR_DIR / "log" / f"{scenario.key}-{n}", f"bench-{os.getpid()}")
    pools = tuple(p for p in topology.POOLS if p.name in ("refresh", "callbacks"))
    try:
        fleet.start(pools, extra_args=scenario.worker_args)
        warm_up(ids[: args.warmup], scenario, args.stall_after)
        Product.objects.update(last_refreshed_at=None, last_error="", price=Decimal("1.00"))
        pids = [p.pid for p in fleet.procs.values()]
        profilers = profile(fleet, f"{scenario.key}-{n}") if args.profile else []
        cpu0, stub0 = sum(cpu_seconds(p) for p in pids), cpu_seconds(stub.proc.pid)
        machine0, database0 = machine_cpu_seconds(), database_cpu_seconds(args.database)
        broker0, bench0 = broker_pid and cpu_seconds(broker_pid), time.process_time()
        started = time.monotonic()
        run = refresh_and_wait(ids, scenario, args.stall_after)
        elapsed = time.monotonic() - started
        worker_cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        standin_cpu = cpu_seconds(stub.proc.pid) - stub0
        bench_cpu = time.process_time() - bench0
        broker_cpu = cpu_seconds(broker_pid) - broker0 if broker_pid else None
        machine_cpu = machine_cpu_seconds() - machine0
        database1 = database_cpu_seconds(args.database)
        database_cpu = None if database0 is None or database1 is None else database1 - database0
        stats = stub.stats()
    finally:
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=30)
        fleet.stop()
        stub.stop()
    callbacks = [c for c in stats["callbacks"] if c["body"].get("run") == run.pk]
    received = callbacks[0]["received_at"] if callbacks else None
    last_item = run.items.aggregate(last=Max("finished_at"))["last"]
    result = Result(
        scenario=scenario, n=n, tasks=tasks, concurrency=concurrency, ideal=ideal,
        makespan=received - run.created_at.timestamp() if received else None,
        worker_cpu=worker_cpu, standin_cpu=standin_cpu, machine_cpu=machine_cpu,
        database_cpu=database_cpu, broker_cpu=broker_cpu, bench_cpu=bench_cpu,
        peak_in_flight=stats["peak_in_flight"],
        callback_lag=received - last_item.timestamp() if received and last_item else None,
        finish_lag=(run.finished_at - last_item).total_seconds()
        if run.finished_at and last_item else None,
        status=run.status, succeeded=run.succeeded,
    )  # fmt: skip
    print(f"   {elapsed:.1f} s, {run.status} {run.succeeded:,}/{n:,}; workers {worker_cpu:.1f} "
          f"CPU s ({1000 * worker_cpu / n:.2f} ms/product), stand-in {standin_cpu:.1f} CPU s, "
          f"peak {stats['peak_in_flight']} requests in flight", flush=True)  # fmt: skip
    others = machine_cpu - worker_cpu - standin_cpu - (database_cpu or 0)
    print(f"   the rest of the machine's CPU: {others:.2f} s (broker {fmt(broker_cpu)}, this "
          f"bench {bench_cpu:.2f}, the kernel and everything else the remainder); callback "
          f"lag: last product -> run finished {fmt(result.finish_lag, '.3f')} s -> status "
          f"callback {fmt(result.callback_lag, '.3f')} s", flush=True)  # fmt: skip
    return result


def warm_up(ids: list[int], scenario: Scenario, stall_after: float) -> None:
    """Refresh a few products first, as nodes that have been running do not start cold: a
    node's first tasks open its database and HTTP connection pools (the callbacks node's
    first finish step took 25 ms on PostgreSQL, 8 of them its own queries)."""
    if ids:
        run = refresh_and_wait(ids, scenario, stall_after)
        print(f"   warm-up: {len(ids):,} products, {run.status}", flush=True)


def refresh_and_wait(ids: list[int], scenario: Scenario, stall_after: float) -> Any:
    """Start a refresh run of `ids` and poll it until settled, or no product has finished
    for `stall_after` seconds."""
    from django.db import InterfaceError, OperationalError, connection

    from shop.models import RefreshRun
    from shop.workflows import refresh_run_request

    run, _ = refresh_run_request(
        product_ids=ids, trigger=RefreshRun.Trigger.COMMAND, chunk_size=scenario.chunk_size
    )
    last_done, last_change = -1, time.monotonic()
    while True:
        try:
            run.refresh_from_db()
        except (OperationalError, InterfaceError):  # a database restarted by hand: look again
            connection.close()
            time.sleep(0.05)
            continue
        if run.is_settled:
            return run
        now = time.monotonic()
        if run.done != last_done:
            last_done, last_change = run.done, now
        if now - last_change > stall_after:
            print(f"   gave up: {run.done:,}/{len(ids):,} done, nothing for {stall_after:g} s")
            return run
        time.sleep(0.05)


def profile(fleet: WorkerFleet, label: str) -> list[subprocess.Popen[bytes]]:
    """py-spy (pip install py-spy) on every node, on-CPU samples only, as collapsed stacks
    in var/bench/profile-<label>-<node>.txt (`bench/profile_top.py` summarises them)."""
    return [
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(proc.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--nonblocking",
                "--output",
                str(VAR_DIR / f"profile-{label}-{node}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for node, proc in fleet.procs.items()
    ]


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def machine() -> str:
    import celery
    import django

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{topology.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, Django {django.get_version()}, Celery "
        f"{celery.__version__}; load average before the run {load}"
    )


def report(results: list[Result], *, latency_ms: float, database: str, load: str) -> str:
    refresh = next(p for p in topology.POOLS if p.name == "refresh")
    lines = [
        f"Supplier stand-in at {latency_ms:g} ms, {database} + Redis; refresh pool: "
        f"{refresh.processes} gevent processes x {refresh.concurrency}.",
        "",
        "| Design | Products | Tasks | Makespan (s) | Ideal (s) | Worker CPU (s) "
        "| CPU / product (ms) | CPU floor (s) | Makespan / max(ideal, floor) "
        "| Stand-in CPU (s) | Database CPU (s) | Machine CPU (s) | Makespan / machine floor "
        "| Peak in flight | Callback lag (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = f"{r.makespan / r.bound:.2f}x" if r.makespan else f"did not finish ({r.status})"
        lines.append(
            f"| {r.scenario.label} | {r.n:,} | {r.tasks:,} | {fmt(r.makespan)} | {r.ideal:.2f} "
            f"| {r.worker_cpu:.1f} | {1000 * r.worker_cpu / r.n:.2f} | {r.floor:.2f} | {ratio} "
            f"| {r.standin_cpu:.1f} | {fmt(r.database_cpu, '.1f')} | {r.machine_cpu:.1f} "
            f"| {fmt(r.makespan / r.machine_floor if r.makespan else None)}x "
            f"| {r.peak_in_flight} | {fmt(r.callback_lag, '.3f')} |"
        )
    for n in sorted({r.n for r in results}):
        pair = {r.scenario.key: r for r in results if r.n == n}
        naive, project = pair.get("naive"), pair.get("project")
        if naive and project and naive.makespan and project.makespan:
            lines.append(
                f"\n{n:,} products: naive / project makespan "
                f"**{naive.makespan / project.makespan:.1f}x**, "
                f"CPU per product {1000 * naive.worker_cpu / n:.2f} vs "
                f"{1000 * project.worker_cpu / n:.2f} ms."
            )
    lines += ["", f"Machine: {machine().rsplit(';', 1)[0]}; load average before: {load}."]
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    broker = os.environ.get("BENCH_BROKER_URL")
    private = None
    if not broker:
        private = PrivateRedis(VAR_DIR / "redis")
        private.start()
        broker = private.url
    stub_url = f"http://127.0.0.1:{free_port()}"
    env = configure(args, broker, stub_url)
    import django

    django.setup()
    import redis
    from django.conf import settings

    from devtools.demo import demo_sku
    from proj.celery import app
    from shop.models import Product

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    database = "PostgreSQL" if env["DATABASE_URL"].startswith("postgres") else "SQLite"
    results: list[Result] = []
    try:
        print(f"{database} at {env['DATABASE_URL']}, broker {broker}; {machine()}")
        prepare_database(env["DATABASE_URL"])
        most = max(args.products)
        Product.objects.bulk_create(
            (Product(sku=demo_sku(i), name=f"placeholder {i}") for i in range(1, most + 1)),
            batch_size=2000,
        )
        project = project_scenario(settings.REFRESH_CHUNK_SIZE, settings.REFRESH_CHUNK_CONCURRENCY)
        for n in args.products:
            for scenario in (NAIVE, project):
                if args.only in (None, scenario.key):
                    redis.Redis.from_url(broker).flushdb()
                    broker_pid = private.proc.pid if private and private.proc else None
                    results.append(
                        run_one(scenario, n, app=app, env=env, args=args, broker_pid=broker_pid)
                    )
    except KeyboardInterrupt:
        print("\nInterrupted; workers stopped.", file=sys.stderr)
        return 130
    finally:
        if private:
            private.stop()
    print("\n" + report(results, latency_ms=args.latency_ms, database=database, load=load))
    return 0 if all(r.makespan and r.succeeded == r.n for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
