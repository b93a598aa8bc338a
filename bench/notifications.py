"""Benchmark: does a transactional email wait behind a bulk campaign? Side by side, one run.

    .venv/bin/python bench/notifications.py [--customers 100000] [--messages 200]
        [--rate 10] [--bulk-rate 100] [--throughput 2000] [--postgres]

Transactional latency (notify() called -> the SMTP sink received it), p50 and p99 over
--messages sent at --rate a second:
  (a) shipped topology, no campaign;
  (b) shipped topology, during a --customers campaign (bulk limited to --bulk-rate/s);
  (c) naive: one shared queue and one pool of the same total concurrency, every batch
      of the campaign published at once (what a plain group() of batches does);
  (d) as (c), with Redis per-message priority (priority_steps 0..9, queue_order_strategy
      "priority"; transactional 0, bulk 9: on Redis 0 is the highest, on RabbitMQ the
      lowest).
Bulk throughput to the sink, no rate limit: batches of 100 over one connection vs one
message per task (a connection each). The rate limit held with one and two bulk nodes.

Everything is the bench's own: a redis-server on a free port (PrivateRedis), the SQLite
file var/bench/notifications.sqlite3 (recreated) or the PostgreSQL database
bench_notifications, the SMTP sink in this process on a free port, workers stopped on exit.
CPU is read from /proc for every worker plus this process (sink and sender): CPU per
message, and the CPU floor (CPU seconds / cores) beside the wall time.
"""

from __future__ import annotations

import sys

if "--worker" in sys.argv:  # the one-queue node: gevent must patch before anything loads
    from gevent import monkey

    monkey.patch_all()

import argparse
import contextlib
import os
import platform
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.fleet import WorkerFleet
from core.waiting import wait_for
from devtools.redis_server import PrivateRedis
from devtools.smtp_sink import Received, SmtpSink
from proj import topology
from proj.topology.base import cpu_count

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var" / "bench"
SQLITE_PATH = VAR_DIR / "notifications.sqlite3"
POSTGRES_DB = "bench_notifications"
SHARED_QUEUE = "notifications.shared"
NODE = "notify_shared@bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000, help="campaign size")
    parser.add_argument("--messages", type=int, default=200, help="transactional messages")
    parser.add_argument("--rate", type=float, default=10.0, help="transactional per second")
    parser.add_argument("--bulk-rate", type=int, default=100, help="EMAIL_BULK_MAX_PER_SECOND")
    parser.add_argument("--throughput", type=int, default=2000, help="recipients, throughput")
    parser.add_argument("--postgres", action="store_true", help=f"PostgreSQL {POSTGRES_DB}")
    parser.add_argument("--only", default="", help="comma-separated parts: latency,bulk,limit")
    parser.add_argument("--worker", choices=("shared", "priority"), help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=30, help=argparse.SUPPRESS)
    return parser.parse_args()


def configure_env(args: argparse.Namespace, broker_url: str, sink_port: int) -> dict[str, str]:
    """The bench's own database, broker and SMTP sink; must run before django.setup()."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    database = (
        f"postgres://postgres@127.0.0.1:5432/{POSTGRES_DB}"
        if args.postgres
        else f"sqlite:///{SQLITE_PATH}"
    )
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "proj.settings",
            "SHOP_VAR_DIR": str(VAR_DIR),
            "DATABASE_URL": database,
            "CELERY_BROKER_URL": broker_url,
            "SUPPLIER_API_URL": "http://127.0.0.1:9/not-used",
            # Workers as in production: DEBUG off (no per-query logging).
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "localhost",
            "DJANGO_LOG_LEVEL": "WARNING",
            "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(sink_port),
            "EMAIL_BULK_MAX_PER_SECOND": str(args.bulk_rate),
        }
    )
    return dict(os.environ)


# --- the naive and priority designs: one queue, this script as the worker ------------------
def one_queue(app: Any, *, priority: bool) -> None:
    """Route every notification task to one queue (this process), with priorities or not."""
    from kombu import Queue

    def route(priority_value: int) -> dict[str, Any]:
        return {"queue": SHARED_QUEUE, **({"priority": priority_value} if priority else {})}

    app.conf.task_routes = (
        {
            "notifications.tasks.notification_send": route(0),
            "notifications.tasks.campaign_*": route(9),
        },
    )
    app.conf.task_queues = (*app.conf.task_queues, Queue(SHARED_QUEUE, routing_key=SHARED_QUEUE))
    if priority:
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options,
            "priority_steps": list(range(10)),
            "queue_order_strategy": "priority",
        }
    reset_routing(app)


def reset_routing(app: Any) -> None:
    """Forget cached routes, queues and broker connections (transport options changed)."""
    for cached in ("queues", "router"):
        app.amqp.__dict__.pop(cached, None)
    app.amqp.flush_routes()
    app._pool = None
    app.amqp._producer_pool = None


def worker_main(args: argparse.Namespace) -> None:
    """`--worker shared|priority`: one gevent node consuming the one queue."""
    from proj.celery import app

    one_queue(app, priority=args.worker == "priority")
    app.worker_main(
        ["worker", "-n", NODE, "-l", "WARNING", "-Q", SHARED_QUEUE, "-P", "gevent",
         "-c", str(args.concurrency), "-O", "fair"]
    )  # fmt: skip


# --- measuring --------------------------------------------------------------------------
def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (dead ones count as 0)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Meter:
    """CPU of the workers and of this process between start() and stop()."""

    pids: list[int]
    wall: float = 0.0
    cpu: float = 0.0
    _t: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def start(self) -> Meter:
        self._t = (time.monotonic(), cpu_seconds(self.pids), own_cpu())
        return self

    def stop(self) -> Meter:
        wall, workers, own = self._t
        self.wall = time.monotonic() - wall
        self.cpu = (cpu_seconds(self.pids) - workers) + (own_cpu() - own)
        return self


class Collector:
    """What the sink received, indexed as it arrives (O(1) per message, no re-scans)."""

    def __init__(self) -> None:
        self.latency: dict[str, float] = {}  # transactional recipient -> received at
        self.bulk: list[float] = []  # received-at of every bulk message

    def __call__(self, message: Received) -> None:
        for recipient in message.recipients:
            if recipient.endswith("@latency.test"):
                self.latency[recipient] = message.received_at
            else:
                self.bulk.append(message.received_at)


@dataclass
class Latency:
    label: str
    samples: list[float] = field(default_factory=list)
    bulk_rate: float = 0.0  # bulk messages/s at the sink while measuring
    meter: Meter | None = None
    lost: int = 0

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0


def wait(condition: Any, timeout: float, what: str) -> Any:
    return wait_for(condition, timeout=timeout, interval=0.05, what=what)


def measure_latency(
    label: str, seen: Collector, args: argparse.Namespace, meter: Meter, tag: str
) -> Latency:
    """--messages transactional emails at a steady --rate; latency from call to the sink."""
    from notifications.services import notify

    result = Latency(label, meter=meter)
    sent_at: dict[str, float] = {}
    bulk_before = len(seen.bulk)
    meter.start()
    began = time.monotonic()
    for i in range(args.messages):
        due = began + i / args.rate
        time.sleep(max(0.0, due - time.monotonic()))
        address = f"t{i}-{tag}@latency.test"
        sent_at[address] = time.time()
        notify(recipient=address, key=f"bench-{tag}-{i}", subject="Your report is ready", body="")

    def all_in() -> bool:
        return all(a in seen.latency for a in sent_at)

    with contextlib.suppress(AssertionError):  # report what arrived; the rest counts as lost
        wait(all_in, 180, f"{label}: every transactional message")
    meter.stop()
    result.samples = [seen.latency[a] - t for a, t in sent_at.items() if a in seen.latency]
    result.lost = len(sent_at) - len(result.samples)
    result.bulk_rate = (len(seen.bulk) - bulk_before) / meter.wall
    return result


# --- data ---------------------------------------------------------------------------------
def prepare_database(postgres: bool) -> None:
    from django.core.management import call_command

    if postgres:
        import psycopg

        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
        ) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {POSTGRES_DB}")
            conn.execute(f"CREATE DATABASE {POSTGRES_DB}")
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)
    call_command("migrate", interactive=False, verbosity=0)


def create_customers(count: int) -> None:
    from shop.models import Customer

    Customer.objects.bulk_create(
        (Customer(email=f"c{i}@bulk.test", marketing_opt_in=True) for i in range(count)),
        batch_size=5000,
    )


def keep_customers(count: int) -> None:
    """The audience of the next campaign: the first `count` customers."""
    from shop.models import Customer

    first = Customer.objects.order_by("pk").values_list("pk", flat=True)[count - 1 : count]
    Customer.objects.filter(pk__gt=first[0]).delete()


def new_campaign(name: str) -> Any:
    from notifications.models import Campaign

    return Campaign.objects.create(
        name=name, subject=f"{name}: spring sale", body="Everything 20% off.", audience="customers"
    )


def start_campaign_shipped(name: str) -> Any:
    """The product's own path: request, then wait for the fan-out to finish."""
    from notifications.models import CampaignSend
    from notifications.workflows import campaign_send_request

    run, _ = campaign_send_request(campaign=new_campaign(name), trigger="command")
    began = time.monotonic()
    wait(
        lambda: CampaignSend.objects.filter(pk=run.pk, fanned_out_at__isnull=False).exists(),
        900,
        "the fan-out",
    )
    print(f"  fan-out of {name}: {time.monotonic() - began:.1f} s", flush=True)
    return run


def start_campaign_flood(name: str, app: Any) -> Any:
    """The naive way: write every batch (here, in this process), publish all at once."""
    from notifications import services
    from notifications.models import CampaignSend

    run = CampaignSend.objects.create(campaign=new_campaign(name), trigger="command")
    began = time.monotonic()
    services.campaign_fan_out(run_id=run.pk)
    run.refresh_from_db()
    for _ in range(run.total):
        app.send_task("notifications.tasks.campaign_send_lane", args=[run.pk])
    print(f"  fan-out of {name}: {time.monotonic() - began:.1f} s, {run.total} tasks", flush=True)
    return run


def cancel(run: Any) -> None:
    from core.reconciler import run_cancel

    run.refresh_from_db()
    if not run.is_finished:
        run_cancel(run)


# --- scenarios ------------------------------------------------------------------------------
def shipped_fleet(app: Any, env: dict[str, str], name: str, **extra_env: str) -> WorkerFleet:
    pools = tuple(p for p in topology.POOLS if p.name in ("notify", "notify_bulk"))
    fleet = WorkerFleet(app, {**env, **extra_env}, VAR_DIR / "log" / name, hostname="bench")
    fleet.start(pools)
    return fleet


def fleet_pids(fleet: WorkerFleet) -> list[int]:
    return [p.pid for p in fleet.procs.values()]


def one_queue_worker(mode: str, env: dict[str, str], app: Any) -> subprocess.Popen[bytes]:
    log = open(VAR_DIR / "log" / f"notify_{mode}.log", "ab")  # noqa: SIM115
    concurrency = sum(p.concurrency for p in topology.POOLS if p.name.startswith("notify"))
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", mode, "--concurrency", str(concurrency)],
        cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait(lambda: app.control.ping(destination=[NODE], timeout=0.5), 60, f"the {mode} node")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def latency_part(
    args: argparse.Namespace, env: dict[str, str], app: Any, seen: Collector, redis_: Any
) -> list[Latency]:
    rows = []
    fleet = shipped_fleet(app, env, "shipped")
    try:
        print("(a) shipped topology, no campaign", flush=True)
        rows.append(measure_latency("(a) shipped, no campaign", seen, args,
                                    Meter(fleet_pids(fleet)), "a"))  # fmt: skip
        print(f"(b) shipped topology, during a {args.customers:,}-recipient campaign", flush=True)
        run = start_campaign_shipped("b")
        rows.append(measure_latency(f"(b) shipped, {args.customers:,} campaign", seen, args,
                                    Meter(fleet_pids(fleet)), "b"))  # fmt: skip
        cancel(run)
    finally:
        fleet.stop()
    redis_.flushdb()
    for key, mode, label in (("c", "shared", "(c) naive: one queue"),
                             ("d", "priority", "(d) one queue + priority")):  # fmt: skip
        print(f"{label}, during a {args.customers:,}-recipient campaign", flush=True)
        one_queue(app, priority=mode == "priority")
        proc = one_queue_worker(mode, env, app)
        try:
            run = start_campaign_flood(key, app)
            rows.append(measure_latency(f"{label}, campaign", seen, args, Meter([proc.pid]), key))
            cancel(run)
        finally:
            stop(proc)
            redis_.flushdb()
    restore_routing(app)
    return rows


def restore_routing(app: Any) -> None:
    from django.conf import settings

    app.conf.task_routes = settings.CELERY_TASK_ROUTES
    app.conf.broker_transport_options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    reset_routing(app)


@dataclass
class Bulk:
    label: str
    messages: int
    tasks: int
    meter: Meter

    @property
    def rate(self) -> float:
        return self.messages / self.meter.wall


def bulk_part(
    args: argparse.Namespace, env: dict[str, str], app: Any, seen: Collector, redis_: Any
) -> list[Bulk]:
    """No rate limit: how fast bulk mail reaches the sink, batched or one per task."""
    from django.test.utils import override_settings

    from notifications import services
    from notifications.models import CampaignSend, Notification

    keep_customers(args.throughput)
    rows = []
    for label, batch, lanes in (
        ("batches of 100, one connection each", 100, 4),
        ("one message per task (a connection each)", 1, 0),
    ):
        print(f"bulk throughput: {label}", flush=True)
        extra = {"EMAIL_BULK_MAX_PER_SECOND": "0", "EMAIL_BULK_BATCH_SIZE": str(batch),
                 "EMAIL_BULK_LANES": str(lanes or 1)}  # fmt: skip
        fleet = shipped_fleet(app, env, f"bulk-{batch}", **extra)
        try:
            with override_settings(EMAIL_BULK_BATCH_SIZE=batch):
                run = CampaignSend.objects.create(
                    campaign=new_campaign(f"bulk-{batch}"), trigger="command"
                )
                services.campaign_fan_out(run_id=run.pk)
                run.refresh_from_db()
            meter = Meter(fleet_pids(fleet)).start()
            for _ in range(lanes or run.total):  # one per batch: all published at once
                app.send_task("notifications.tasks.campaign_send_lane", args=[run.pk])
            wait(lambda run=run: _finished(run), 900, "the campaign to be sent")
            meter.stop()
            sent = Notification.objects.filter(send=run, status="sent").count()
            rows.append(Bulk(label, sent, run.total, meter))
        finally:
            fleet.stop()
            redis_.flushdb()
    return rows


@dataclass
class Limit:
    label: str
    limit: int
    achieved: float
    worst_second: int
    messages: int
    meter: Meter


def limit_part(
    args: argparse.Namespace, env: dict[str, str], app: Any, seen: Collector, redis_: Any
) -> list[Limit]:
    """The shared limit with one and with two bulk nodes: achieved rate at the sink."""
    rows = []
    limit = args.bulk_rate
    keep_customers(limit * 15)
    for nodes in (1, 2):
        print(f"rate limit {limit}/s with {nodes} bulk node(s)", flush=True)
        fleet = shipped_fleet(app, env, f"limit-{nodes}", WORKER_PROCESSES_NOTIFY_BULK=str(nodes))
        try:
            first = len(seen.bulk)
            meter = Meter(fleet_pids(fleet)).start()
            run = start_campaign_shipped(f"limit-{nodes}")
            wait(lambda run=run: _finished(run), 900, "the rate-limited campaign")
            meter.stop()
            times = sorted(seen.bulk[first:])
            # Steady state: drop the first and last second (start-up, the tail).
            steady = [t for t in times if times[0] + 1 <= t <= times[-1] - 1]
            achieved = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0
            worst, j = 0, 0
            for i, t in enumerate(times):  # most messages in any one-second window
                while times[j] < t - 1:
                    j += 1
                worst = max(worst, i - j + 1)
            rows.append(Limit(f"{nodes} bulk node(s)", limit, achieved, worst, len(times), meter))
        finally:
            fleet.stop()
            redis_.flushdb()
    return rows


def _finished(run: Any) -> bool:
    run.refresh_from_db()
    return run.is_finished


# --- report ------------------------------------------------------------------------------
def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs "
        f"(cpu_count for pools: {cpu_count()}), Python {platform.python_version()}, "
        f"load average {load}"
    )


def report(latency: list[Latency], bulk: list[Bulk], limits: list[Limit], db: str) -> str:
    cores = os.cpu_count() or 1
    out = [f"Machine: {machine()}; database: {db}", ""]
    if latency:
        base = latency[0].pct(0.99) or 1
        out += [
            "| Scenario | Messages | p50 (ms) | p99 (ms) | p99 / (a) | Bulk to sink (msg/s) "
            "| Wall (s) | CPU (s) | CPU floor (s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in latency:
            m = r.meter
            assert m is not None
            lost = f" ({r.lost} lost)" if r.lost else ""
            out.append(
                f"| {r.label} | {len(r.samples)}{lost} | {1000 * r.pct(0.5):,.0f} "
                f"| {1000 * r.pct(0.99):,.0f} | {r.pct(0.99) / base:.2f}x | {r.bulk_rate:,.0f} "
                f"| {m.wall:.1f} | {m.cpu:.1f} | {m.cpu / cores:.1f} |"
            )
        out.append("")
    if bulk:
        out += [
            "| Bulk, no rate limit | Messages | Batches | msg/s | Wall (s) | CPU (s) "
            "| CPU per msg (ms) | CPU floor (s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for b in bulk:
            out.append(
                f"| {b.label} | {b.messages:,} | {b.tasks:,} | {b.rate:,.0f} "
                f"| {b.meter.wall:.1f} | {b.meter.cpu:.1f} "
                f"| {1000 * b.meter.cpu / max(b.messages, 1):.2f} | {b.meter.cpu / cores:.1f} |"
            )
        if len(bulk) == 2:
            out.append(f"\nBatched / one per task: {bulk[0].rate / bulk[1].rate:.1f}x messages/s")
        out.append("")
    if limits:
        out += [
            "| Rate limit | Limit (msg/s) | Achieved, steady (msg/s) | Achieved / limit "
            "| Most in any 1 s | Messages | Wall (s) | CPU (s) | CPU per msg (ms) "
            "| CPU floor (s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for x in limits:
            m = x.meter
            out.append(
                f"| {x.label} | {x.limit} | {x.achieved:.1f} | {x.achieved / x.limit:.3f} "
                f"| {x.worst_second} | {x.messages:,} | {m.wall:.1f} | {m.cpu:.1f} "
                f"| {1000 * m.cpu / max(x.messages, 1):.2f} | {m.cpu / cores:.1f} |"
            )
    return "\n".join(out)


def main() -> int:
    args = parse_args()
    if args.worker:
        worker_main(args)
        return 0
    parts = set(filter(None, args.only.split(","))) or {"latency", "bulk", "limit"}
    private = PrivateRedis(VAR_DIR / "redis")
    private.start()
    seen = Collector()
    sink = SmtpSink(echo=seen).start()
    try:
        env = configure_env(args, private.url, sink.port)
        import django

        django.setup()
        from proj.celery import app

        prepare_database(args.postgres)
        redis_ = private.client()
        print(f"{machine()}\ncreating {args.customers:,} customers", flush=True)
        create_customers(max(args.customers, args.throughput, args.bulk_rate * 15))
        latency = latency_part(args, env, app, seen, redis_) if "latency" in parts else []
        bulk = bulk_part(args, env, app, seen, redis_) if "bulk" in parts else []
        limits = limit_part(args, env, app, seen, redis_) if "limit" in parts else []
        db = "PostgreSQL" if args.postgres else "SQLite"
        print("\n" + report(latency, bulk, limits, db))
    finally:
        sink.stop()
        private.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
