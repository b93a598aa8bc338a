"""Benchmark the fulfilment pipeline: batched (as shipped) against one order per task.

    .venv/bin/python bench/fulfilment.py [--orders 10000] [--latency-ms 20]
        [--batch-size 50] [--database sqlite|postgres] [--only batched,single,one-warehouse]

Side by side in one run, on the real stack (the three fulfilment pools as the topology
runs them, Redis, the database, the warehouse and carrier stand-ins over HTTP, each
answering after --latency-ms):
  batched        the shipped design: FULFILMENT_BATCH_SIZE orders per batch, one
                 warehouse call and one carrier call per batch, bulk writes; the orders
                 spread over both warehouses;
  single         the same stages, one order per batch (FULFILMENT_BATCH_SIZE=1): three
                 tasks, two API calls and the writes per order;
  one-warehouse  batched, every order sent to one warehouse (its queues alone busy).
Reported: orders per second (first release -> last shipped), SQL statements per order
sent by the workers (executemany counted once; bench/fulfilment_settings.py counts them),
p50/p99 order latency (released -> shipped, every order released at once, so it is mostly
queueing), worker CPU per order and the CPU floor (worker CPU / cores: on a small machine
the bound, not the network), and the stand-ins' calls.

Everything is the bench's own: a redis-server on a free port (PrivateRedis), the SQLite
file var/bench/fulfilment.sqlite3 (recreated; or postgres://.../bench_fulfilment with
--database postgres), stand-ins as their own processes on free ports, workers named
`*@bench-<pid>` and stopped on exit. Shipping notifications are queued (rows and messages
on the `notifications` queue, the same work in every scenario) but not sent: no notify
node runs, so SMTP is not measured here (bench/notifications.py does that).
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
from bench.refresh import StandIn, prepare_database  # noqa: E402
from core.fleet import WorkerFleet  # noqa: E402
from devtools.redis_server import PrivateRedis, free_port  # noqa: E402
from proj import topology  # noqa: E402

VAR_DIR = BASE_DIR / "var" / "bench"
SQLITE_URL = f"sqlite:///{VAR_DIR / 'fulfilment.sqlite3'}"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_fulfilment"
TICKS = os.sysconf("SC_CLK_TCK")
COUNTER = "bench:fulfilment:queries"
POOLS = ("fulfil_pick", "fulfil_pack", "fulfil_ship")


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    batch_size: int  # 0: the --batch-size given
    warehouse: str | None  # every order to this warehouse, or the assignment rule


SCENARIOS = (
    Scenario("single", "One order per task", 1, None),
    Scenario("batched", "Batched (shipped)", 0, None),
    Scenario("one-warehouse", "Batched, one warehouse", 0, "north"),
)


@dataclass
class Result:
    scenario: Scenario
    n: int
    batch_size: int
    elapsed: float | None
    shipped: int
    statements: int
    worker_cpu: float
    standin_cpu: float
    p50: float | None
    p99: float | None
    calls: dict[str, int]

    @property
    def rate(self) -> float | None:
        return self.shipped / self.elapsed if self.elapsed else None

    @property
    def floor(self) -> float:
        return self.worker_cpu / topology.cpu_count()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--only", default="", help="comma-separated: single,batched,one-warehouse")
    parser.add_argument("--stall-after", type=float, default=60.0,
                        help="give a scenario up when no order ships for this long")  # fmt: skip
    args = parser.parse_args()
    if args.orders < 1 or args.batch_size < 1 or args.latency_ms < 0:
        parser.error("--orders and --batch-size must be positive, --latency-ms not negative")
    unknown = set(filter(None, args.only.split(","))) - {s.key for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s) for --only: {', '.join(sorted(unknown))}")
    return args


def process_cpu(pid: int) -> float:
    """CPU of a process and of its children, the exited ones (reaped) and the live ones:
    prefork children are recycled during a run."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = sum(int(f) for f in fields[11:15]) / TICKS  # utime stime cutime cstime
    return own + sum(process_cpu(int(c)) for c in children)


def configure(args: argparse.Namespace, broker: str) -> dict[str, str]:
    """This process's and the workers' environment: production-like, the bench's own."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    default_db = POSTGRES_URL if args.database == "postgres" else SQLITE_URL
    env = {
        "DJANGO_SETTINGS_MODULE": "proj.settings",
        "SHOP_ENV_FILE": "/dev/null",
        "SHOP_VAR_DIR": str(VAR_DIR),
        "SHOP_PRIVATE_STORAGE": str(VAR_DIR / "private"),
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", default_db),
        "CELERY_BROKER_URL": broker,
        "SUPPLIER_API_URL": "http://127.0.0.1:9",
        "DJANGO_DEBUG": "0",  # workers as in production: no per-query logging
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "localhost",
        "DJANGO_LOG_LEVEL": "WARNING",
        "FULFILMENT_WAREHOUSES": "north,south",
        "FULFILMENT_BATCH_MAX_WAIT": "2",
    }
    os.environ.update(env)
    return dict(os.environ)


def reset(broker: str) -> None:
    """Nothing of the previous scenario left: pipeline rows, messages, labels."""
    import redis

    from core.models import DeadLetter, OutboxMessage
    from fulfilment.models import Fulfilment, FulfilmentBatch
    from notifications.models import Notification

    Fulfilment.objects.all().delete()
    FulfilmentBatch.objects.all().delete()
    Notification.objects.all().delete()
    OutboxMessage.objects.all().delete()
    DeadLetter.objects.all().delete()
    redis.Redis.from_url(broker).flushdb()
    shutil.rmtree(VAR_DIR / "private" / "labels", ignore_errors=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_one(
    scenario: Scenario, n: int, *, app: Any, env: dict[str, str], args: argparse.Namespace,
    broker: str,
) -> Result:  # fmt: skip
    import redis
    from django.db.models import Max, Min

    from fulfilment.models import Fulfilment
    from fulfilment.workflows import orders_release_request
    from shop.models import Order

    size = scenario.batch_size or args.batch_size
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n== {scenario.label}: {n:,} orders, batches of {size} (load {load})", flush=True)
    reset(broker)
    warehouse = StandIn(free_port(), args.latency_ms, env, "warehouse")
    carrier = StandIn(free_port(), args.latency_ms, env, "carrier")
    worker_env = {
        **env,
        "DJANGO_SETTINGS_MODULE": "bench.fulfilment_settings",
        "FULFILMENT_BATCH_SIZE": str(size),
        "FULFILMENT_WAREHOUSE_API_URL": warehouse.url,
        "FULFILMENT_CARRIER_API_URL": carrier.url,
    }
    log_dir = VAR_DIR / "log" / f"fulfilment-{scenario.key}-{n}"
    fleet = WorkerFleet(app, worker_env, log_dir, f"bench-{os.getpid()}")
    pools = tuple(p for p in topology.POOLS if p.name in POOLS)
    client = redis.Redis.from_url(broker)
    ids = list(Order.objects.order_by("pk").values_list("pk", flat=True)[:n])
    try:
        fleet.start(pools)
        pids = [p.pid for p in fleet.procs.values()]
        standins = [warehouse.proc.pid, carrier.proc.pid]
        cpu0 = sum(process_cpu(p) for p in pids)
        stand0 = sum(process_cpu(p) for p in standins)
        client.delete(COUNTER)
        started = time.monotonic()
        orders_release_request(order_ids=ids, warehouse=scenario.warehouse)
        final = [Fulfilment.Status.SHIPPED, Fulfilment.Status.FAILED]
        last, last_change = -1, time.monotonic()
        while True:
            done = Fulfilment.objects.filter(status__in=final).count()
            now = time.monotonic()
            if done != last:
                last, last_change = done, now
            if done >= n:
                break
            if now - last_change > args.stall_after:
                print(f"   gave up: {done:,}/{n:,} done, nothing for {args.stall_after:g} s")
                break
            time.sleep(0.2)
        wall = time.monotonic() - started
        # Let the last task finish its bookkeeping (the batch settles after its orders ship).
        fleet.wait_idle(broker, timeout=30)
        worker_cpu = sum(process_cpu(p) for p in pids) - cpu0
        standin_cpu = sum(process_cpu(p) for p in standins) - stand0
        statements = int(client.get(COUNTER) or 0)
        calls = {"warehouse": warehouse.stats()["calls"], "carrier": carrier.stats()["calls"]}
    finally:
        fleet.stop()
        warehouse.stop()
        carrier.stop()
    shipped = Fulfilment.objects.filter(status=Fulfilment.Status.SHIPPED)
    span = shipped.aggregate(first=Min("released_at"), last=Max("shipped_at"))
    elapsed = (span["last"] - span["first"]).total_seconds() if span["last"] else None
    latencies = [
        (s - r).total_seconds() for r, s in shipped.values_list("released_at", "shipped_at")
    ]
    result = Result(
        scenario=scenario, n=n, batch_size=size, elapsed=elapsed, shipped=len(latencies),
        statements=statements, worker_cpu=worker_cpu, standin_cpu=standin_cpu,
        p50=percentile(latencies, 0.5), p99=percentile(latencies, 0.99), calls=calls,
    )  # fmt: skip
    print(
        f"   {wall:.1f} s, {result.shipped:,}/{n:,} shipped; workers {worker_cpu:.1f} CPU s "
        f"({1000 * worker_cpu / n:.2f} ms/order), {statements / n:.1f} statements/order, "
        f"calls {calls}",
        flush=True,
    )
    return result


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def machine() -> str:
    import celery
    import django

    return (
        f"{topology.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, Django {django.get_version()}, Celery "
        f"{celery.__version__}"
    )


def report(results: list[Result], *, args: argparse.Namespace, database: str, load: str) -> str:
    pools = {p.name: p for p in topology.POOLS if p.name in POOLS}
    shape = ", ".join(
        f"{name} {p.processes} x {p.concurrency} {p.pool}" for name, p in pools.items()
    )
    lines = [
        f"Stand-ins at {args.latency_ms:g} ms per call, {database} + Redis; pools: {shape}.",
        "",
        "| Scenario | Orders | Batch | Orders/s | SQL statements / order | p50 latency (s) "
        "| p99 latency (s) | Worker CPU (s) | CPU / order (ms) | CPU floor (s) "
        "| Warehouse calls | Carrier calls |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario.label} | {r.n:,} | {r.batch_size} | {fmt(r.rate, '.0f')} "
            f"| {r.statements / r.n:.1f} | {fmt(r.p50)} | {fmt(r.p99)} | {r.worker_cpu:.1f} "
            f"| {1000 * r.worker_cpu / r.n:.2f} | {r.floor:.1f} | {r.calls['warehouse']:,} "
            f"| {r.calls['carrier']:,} |"
        )
    by_key = {r.scenario.key: r for r in results}
    single, batched, one = (by_key.get(k) for k in ("single", "batched", "one-warehouse"))
    if single and batched and single.rate and batched.rate:
        lines.append(
            f"\nBatched / one order per task: **{batched.rate / single.rate:.1f}x** the "
            f"throughput, {single.statements / max(batched.statements, 1):.1f}x fewer SQL "
            f"statements, {single.worker_cpu / max(batched.worker_cpu, 0.01):.1f}x less worker CPU."
        )
    if one and batched and one.rate and batched.rate:
        lines.append(
            f"Two warehouses in parallel / one: {batched.rate / one.rate:.2f}x the throughput."
        )
    lines += ["", f"Machine: {machine()}; load average before: {load}."]
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    private = PrivateRedis(VAR_DIR / "redis-fulfilment")
    private.start()
    broker = private.url
    env = configure(args, broker)
    import django

    django.setup()
    from decimal import Decimal

    from django.utils import timezone

    from proj.celery import app
    from shop.models import Order, OrderLine, Product

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    database = "PostgreSQL" if env["DATABASE_URL"].startswith("postgres") else "SQLite"
    wanted = set(filter(None, args.only.split(","))) or {s.key for s in SCENARIOS}
    results: list[Result] = []
    try:
        print(f"{database} at {env['DATABASE_URL']}, broker {broker}; {machine()}")
        prepare_database(env["DATABASE_URL"])
        price = Decimal("9.90")
        products = Product.objects.bulk_create(
            Product(sku=f"BENCH-{i:03d}", name=f"Bench product {i}", price=price)
            for i in range(1, 21)
        )
        now = timezone.now()
        orders = Order.objects.bulk_create(
            (
                Order(reference=f"B{i:07d}", customer_email=f"c{i}@bench.example", placed_at=now)
                for i in range(1, args.orders + 1)
            ),
            batch_size=2000,
        )
        lines = (
            OrderLine(order=o, product=products[(o.pk + k) % 20], quantity=1 + k, unit_price=price)
            for o in orders
            for k in range(2)
        )
        OrderLine.objects.bulk_create(lines, batch_size=2000)
        for scenario in SCENARIOS:
            if scenario.key in wanted:
                results.append(
                    run_one(scenario, args.orders, app=app, env=env, args=args, broker=broker)
                )
    except KeyboardInterrupt:
        print("\nInterrupted; workers stopped.", file=sys.stderr)
        return 130
    finally:
        private.stop()
    print("\n" + report(results, args=args, database=database, load=load))
    return 0 if all(r.shipped == r.n for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
