"""Benchmark: does a small import wait behind a big one? Five designs side by side.

    .venv/bin/python bench/fairness.py [--database sqlite|postgres] [--broker redis|rabbitmq]
        [--a 1500] [--b 50] [--users 100] [--max-chunks 300] [--window 15]
        [--skip-ab] [--skip-many]

Everything is its own: a redis-server on a free port (devtools.redis_server.PrivateRedis;
with --broker rabbitmq, a vhost `bench_fairness` of the machine's RabbitMQ, made and
deleted by rabbitmqctl, where message priorities are ignored: small first is plain round
robin there), a SQLite file in var/bench/fairness/ (or the PostgreSQL database
bench_fairness), the `imports` and `callbacks` pools' nodes as the Procfile runs them.
Chunks are real import chunks (IMPORTS_CHUNK_SIZE rows creating products).

A/B: user A submits an import of --a chunk tasks; one second later user B submits --b.
B's and A's completion time (submit -> last row applied) in five designs:
  B alone         per-user queues, B only;
  FIFO            every chunk on one shared queue (FAIR_MAX_QUEUES=0, 1 overflow queue);
  small first     per-user queues with chunk priorities by backlog, as shipped;
  round robin     per-user queues without priorities (FAIR_PRIORITY_CHUNKS=0);
  hashed K=4      users hashed onto 4 shared queues (FAIR_MAX_QUEUES=0, 4 overflow queues).
Many users, with and without priorities: --users users submit 1..--max-chunks chunk tasks
each in one transaction while the imports nodes are stopped, which then start and take
every user's queue at once (so all start together); once half the chunks are done one
imports node is killed and restarted. Reported: Jain's fairness index of the users'
throughput over windows of 5 s and of --window s (users with work left through the whole
window) from the moment the nodes answer until the kill, the completion
times of the smallest jobs, runs or rows lost, and the queues left behind after the
reconciler's sweep. CPU: every worker, the broker's server and this process.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DIR = BASE_DIR / "var" / "bench" / "fairness"
SQLITE_URL = f"sqlite:///{BENCH_DIR / 'fairness.sqlite3'}"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_fairness"
sys.path.insert(0, str(BASE_DIR))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RedisBroker:
    """A redis-server of the bench's own on a free port."""

    name = "private redis"

    def __init__(self) -> None:
        from devtools.redis_server import PrivateRedis

        self.server = PrivateRedis(BENCH_DIR / "redis")
        self.url = self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def pids(self) -> list[int]:
        return [self.server.proc.pid]

    def flush(self) -> None:
        self.server.client().flushdb()

    def leftovers(self) -> tuple[int, int]:
        """User and overflow queues, and their bindings, still on the broker."""
        client = self.server.client()
        keys = [k for k in client.keys("imports.*") if not k.startswith(b"imports.nodes")]
        bindings = [m for m in client.smembers("_kombu.binding.default")
                    if b"imports.user." in m or b"imports.overflow." in m]  # fmt: skip
        return len(keys), len(bindings)


class RabbitBroker:
    """A vhost of the machine's RabbitMQ, made for the run and deleted after it."""

    name = "RabbitMQ (own vhost)"
    vhost = "bench_fairness"

    def __init__(self) -> None:
        self.url = f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}"

    def ctl(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True)
        if check and done.returncode:
            raise SystemExit(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        self.ctl("delete_vhost", self.vhost, check=False)  # a run that was interrupted
        self.ctl("add_vhost", self.vhost)
        self.ctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")

    def stop(self) -> None:
        self.ctl("delete_vhost", self.vhost)

    def pids(self) -> list[int]:
        found = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]

    def user_queues(self) -> list[str]:
        rows = self.ctl("list_queues", "-p", self.vhost, "name").split()
        return [n for n in rows if n.startswith(("imports.user.", "imports.overflow."))]

    def flush(self) -> None:
        from kombu import Connection

        with Connection(self.url) as conn:
            for name in self.user_queues():
                conn.default_channel.queue_delete(name)

    def leftovers(self) -> tuple[int, int]:
        rows = self.ctl("list_bindings", "-p", self.vhost, "destination_name").split()
        bindings = [n for n in rows if n.startswith(("imports.user.", "imports.overflow."))]
        return len(self.user_queues()), len(bindings)


def configure(broker_url: str, database: str) -> dict[str, str]:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="proj.settings", DJANGO_DEBUG="1", SHOP_VAR_DIR=str(BENCH_DIR),
        DATABASE_URL=database, CELERY_BROKER_URL=broker_url, DJANGO_LOG_LEVEL="WARNING",
        SHOP_ENV_FILE=os.devnull, RUN_STALL_AFTER="15", FAIR_CONTROL_TIMEOUT="0.5",
    )  # fmt: skip
    return dict(os.environ)


class Bench:
    def __init__(self, fleet: Any, broker: Any) -> None:
        from django.conf import settings

        self.fleet, self.broker, self.settings = fleet, broker, settings
        self.chunk = settings.IMPORTS_CHUNK_SIZE
        self.users: dict[str, Any] = {}
        self.serial = 0
        self.window = 15.0

    def user(self, name: str) -> Any:
        from django.contrib.auth.models import Permission, User

        if name not in self.users:
            user = User.objects.create_user(name, is_staff=True)
            user.user_permissions.add(Permission.objects.get(codename="add_importrun"))
            self.users[name] = user
        return self.users[name]

    def submit(self, name: str, chunks: int) -> Any:
        from imports import services, workflows

        self.serial += 1
        prefix = f"{name}-{self.serial}"
        rows = [
            {"line": i + 2, "sku": f"{prefix}-{i:06d}", "name": f"{prefix} {i}",
             "price": "9.99", "stock": i % 50}
            for i in range(chunks * self.chunk)
        ]  # fmt: skip
        run, _ = workflows.import_run_request(
            validation=services.Validation(rows=rows), file_name=f"{prefix}.csv",
            trigger="command", requested_by=self.user(name),
        )  # fmt: skip
        return run

    def design(self, max_queues: int, overflow: int, priority_chunks: int) -> None:
        # Priorities are chosen where the work is published: in this process.
        self.settings.FAIR_MAX_QUEUES = max_queues
        self.settings.FAIR_OVERFLOW_QUEUES = overflow
        self.settings.FAIR_PRIORITY_CHUNKS = priority_chunks

    def wait(self, runs: list[Any], timeout: float = 1800) -> None:
        from imports.models import ImportRun

        ids = [r.pk for r in runs]
        deadline = time.monotonic() + timeout
        while ImportRun.objects.filter(pk__in=ids, finished_at__isnull=True).exists():
            if time.monotonic() > deadline:
                raise SystemExit("Timed out waiting for the imports to finish")
            time.sleep(0.2)

    def completion(self, run: Any) -> float:
        from django.db.models import Max

        run.refresh_from_db()
        last = run.items.aggregate(at=Max("finished_at"))["at"]
        return (last - run.created_at).total_seconds()

    def cpu(self) -> float:
        pids = [p.pid for p in self.fleet.procs.values()] + self.broker.pids()
        return sum(cpu_seconds(pid) for pid in pids) + time.process_time()

    def reset(self) -> None:
        """No queue from the last scenario: registry emptied, nodes told, broker flushed."""
        from imports import fair
        from imports.models import ImportQueue

        ImportQueue.objects.all().delete()
        fair.queues_sync()
        self.broker.flush()

    def ab(self, label: str, a: int, b: int, alone: bool = False) -> dict[str, Any]:
        self.reset()
        cpu, start = self.cpu(), time.monotonic()
        runs = []
        if not alone:
            runs.append(self.submit("A", a))
            time.sleep(max(0.0, 1 - (time.monotonic() - start)))
        runs.append(self.submit("B", b))
        self.wait(runs)
        wall, cpu = time.monotonic() - start, self.cpu() - cpu
        chunks = sum(r.total for r in runs)
        return {
            "label": label, "queues": " / ".join(r.queue for r in runs),
            "a": None if alone else self.completion(runs[0]), "b": self.completion(runs[-1]),
            "wall": wall, "cpu": cpu, "chunks": chunks, "b_steps": self.steps(runs[-1]),
        }  # fmt: skip

    def stop_pool(self, pool: Any) -> None:
        """A warm shutdown of the pool's nodes (idle here: nothing is requeued)."""
        procs = [self.fleet.procs.pop(node) for node in pool.nodes]
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)

    def steps(self, run: Any) -> dict[str, float]:
        """Where a run's time went: seconds from its creation to each step."""
        from django.db.models import Max, Min

        from core.models import OutboxMessage

        run.refresh_from_db()
        published = (
            OutboxMessage.objects.filter(object_id=run.pk, description__startswith="start import")
            .values_list("published_at", flat=True)
            .first()
        )
        done = run.items.aggregate(first=Min("finished_at"), last=Max("finished_at"))
        at = {"published": published, "first started": run.started_at,
              "first done": done["first"], "last done": done["last"]}  # fmt: skip
        return {k: (v - run.created_at).total_seconds() for k, v in at.items() if v}

    def many(self, users: int, max_chunks: int, seed: int = 11) -> dict[str, Any]:
        from django.db import transaction
        from django.utils import timezone

        from core import reconciler
        from core.models import RunEvent
        from imports.models import ImportChunk, ImportQueue, ImportRun

        self.reset()
        sizes = random.Random(seed).choices(range(1, max_chunks + 1), k=users)
        stop = threading.Event()

        def reconcile_loop() -> None:  # the Procfile's reconciler, in a thread
            while not stop.wait(3):
                reconciler.reconcile()

        loop = threading.Thread(target=reconcile_loop, daemon=True)
        for i in range(users):
            self.user(f"u{i:03d}")
        # "All within one second": one process publishes 14,000 chunk tasks in 20-25 s on
        # 2 cores, so the first users would have had their share of the pool before the
        # last ones' work reached it. The imports nodes are stopped meanwhile, as after a
        # deploy; they consume every active user queue from the registry before taking
        # work (imports.worker), so every user starts together.
        pool = self.fleet.pool("imports")
        self.stop_pool(pool)
        cpu, start = self.cpu(), time.monotonic()
        with transaction.atomic():
            runs = [self.submit(f"u{i:03d}", n) for i, n in enumerate(sizes)]
        submitted = time.monotonic() - start
        self.fleet.start((pool,))
        t0 = timezone.now()
        loop.start()
        total = sum(sizes)
        while ImportChunk.objects.filter(run__in=runs, status="pending").count() > total / 2:
            time.sleep(0.5)
        killed_at = timezone.now()
        node = pool.nodes[0]  # a node dies half-way and comes back
        self.fleet.procs.pop(node).kill()
        self.fleet.start((pool,))
        self.wait(runs)
        wall, cpu = time.monotonic() - start, self.cpu() - cpu
        stop.set()
        loop.join()

        finished = {r.pk: [] for r in runs}
        for run_id, at in ImportChunk.objects.filter(run__in=runs).values_list(
            "run_id", "finished_at"
        ):
            finished[run_id].append(at)
        resumed = RunEvent.objects.filter(
            object_id__in=[r.pk for r in runs], kind=RunEvent.Kind.RESUMED
        ).count()
        ends = {pk: max(times) for pk, times in finished.items()}
        # Jain's index per window over the users with work left through the whole window,
        # until the node is killed (what follows measures recovery, not fairness). A window
        # must hold several chunks per user: with 2-3 each, counts of 2 and 3 alone read as
        # unfair (J = 0.96 at best, less with 1s among them) however fair the broker is.
        jains: dict[float, list[tuple[float, int]]] = {}
        for window in (5.0, self.window):
            jains[window] = []
            k = 0
            while True:
                lo = t0 + timezone.timedelta(seconds=k * window)
                hi = lo + timezone.timedelta(seconds=window)
                active = [pk for pk, end in ends.items() if end > hi]
                if len(active) < 2 or hi > killed_at:
                    break
                x = [sum(1 for at in finished[pk] if lo < at <= hi) for pk in active]
                if sum(x):
                    j = sum(x) ** 2 / (len(x) * sum(v * v for v in x))
                    jains[window].append((j, len(active)))
                k += 1
        # From the pool's first applied chunk (the users' work was queued before the nodes
        # started, and the first node works before the second one answers).
        began = min(min(times) for times in finished.values())
        small = sorted(
            ((ends[r.pk] - began).total_seconds(), r.total)
            for r in runs
            if r.total <= max(3, max_chunks // 100)
        )
        failed = (
            ImportRun.objects.filter(pk__in=[r.pk for r in runs])
            .exclude(status="succeeded")
            .count()
        )
        expected_rows = total * self.chunk
        applied = sum(
            ImportRun.objects.filter(pk__in=[r.pk for r in runs]).values_list(
                "rows_created", flat=True
            )
        )
        later = timezone.now() + timezone.timedelta(
            seconds=self.settings.FAIR_QUEUE_IDLE_SECONDS + 1
        )
        reconciler.reconcile(now=later)
        queues_left, bindings_left = self.broker.leftovers()
        return {
            "users": users, "chunks": total, "submitted_in": submitted, "wall": wall, "cpu": cpu,
            "resumed": resumed,
            "jain": {
                window: (
                    sum(j * w for j, w in found) / sum(w for _, w in found) if found
                    else float("nan"),
                    min((j for j, _ in found), default=float("nan")),
                    found,
                )
                for window, found in jains.items()
            },
            "small": small, "failed_runs": failed, "rows_lost": expected_rows - applied,
            "registry_left": ImportQueue.objects.count(),
            "queues_left": queues_left, "bindings_left": bindings_left,
        }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=int, default=1500, help="A's chunk tasks")
    parser.add_argument("--b", type=int, default=50, help="B's chunk tasks")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--max-chunks", type=int, default=300)
    parser.add_argument("--skip-many", action="store_true")
    parser.add_argument("--skip-ab", action="store_true", help="only the many-users run")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    parser.add_argument("--window", type=float, default=15.0, help="Jain window, seconds")
    args = parser.parse_args()

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    broker = RedisBroker() if args.broker == "redis" else RabbitBroker()
    broker.start()
    env = configure(broker.url, SQLITE_URL if args.database == "sqlite" else POSTGRES_URL)
    import django

    django.setup()
    from bench.refresh import prepare_database
    from core.fleet import WorkerFleet
    from proj.celery import app

    prepare_database(env["DATABASE_URL"])
    fleet = WorkerFleet(app, env, BENCH_DIR / "log", hostname="bench-fair")
    fleet.start((fleet.pool("imports"), fleet.pool("callbacks")))  # finish steps, syncs
    load = os.getloadavg()
    try:
        bench = Bench(fleet, broker)
        bench.window = args.window
        s = bench.settings
        shipped = (s.FAIR_MAX_QUEUES, s.FAIR_OVERFLOW_QUEUES, s.FAIR_PRIORITY_CHUNKS)
        plain = (*shipped[:2], 0)  # per-user queues, no priorities: plain round robin
        rows = []
        bench.design(*shipped)
        bench.ab("warm-up (not shown)", 20, 5)  # first tasks import modules, open pools
        if not args.skip_ab:
            rows.append(bench.ab("B alone (per-user queues)", args.a, args.b, alone=True))
            bench.design(0, 1, shipped[2])
            rows.append(bench.ab("FIFO: one shared queue", args.a, args.b))
            bench.design(*shipped)
            rows.append(bench.ab("per-user queues, small first (shipped)", args.a, args.b))
            bench.design(*plain)
            rows.append(bench.ab("per-user queues, plain round robin", args.a, args.b))
            bench.design(0, 4, shipped[2])
            rows.append(bench.ab("hashed shared queues, K=4", args.a, args.b))
        many = []
        if not args.skip_many:
            for label, design in (("small first (shipped)", shipped), ("plain round robin", plain)):
                bench.design(*design)
                many.append((label, bench.many(args.users, args.max_chunks)))
            bench.design(*shipped)
    finally:
        fleet.stop()
        broker.stop()

    cores = os.cpu_count() or 1
    pool = fleet.pool("imports")
    print(f"\nFairness: A = {args.a} chunk tasks, B = {args.b} one second later; "
          f"{bench.chunk} rows per chunk; pool imports: {len(pool.nodes)} gevent nodes x "
          f"{pool.concurrency}; {cores} CPUs; load average before {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}; broker: {broker.name}; {args.database}\n")  # fmt: skip
    if rows:
        print_ab(rows, cores)
    for label, result in many:
        print_many(label, result, cores)


def print_ab(rows: list[dict[str, Any]], cores: int) -> None:
    print("| design | queues (A / B) | B done (s) | A done (s) | wall (s) | CPU (s) "
          "| CPU floor (s) | CPU per chunk (ms) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        a = f"{r['a']:.2f}" if r["a"] is not None else "-"
        print(
            f"| {r['label']} | {r['queues']} | {r['b']:.2f} | {a} | {r['wall']:.1f} | "
            f"{r['cpu']:.1f} | {r['cpu'] / cores:.1f} | {1000 * r['cpu'] / r['chunks']:.1f} |"
        )
    print("\nWhere B's time goes (seconds from its run's creation):\n")
    print("| design | published | first chunk started | first chunk done | last chunk done |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        s = r["b_steps"]
        print(f"| {r['label']} | " + " | ".join(
            f"{s[k]:.2f}" if k in s else "-"
            for k in ("published", "first started", "first done", "last done")) + " |")  # fmt: skip
    alone, fifo, fair_, plain, hashed = rows
    print(
        f"\nB per-user / B alone: {fair_['b'] / alone['b']:.2f}x (target <= 1.5x); "
        f"plain round robin {plain['b'] / alone['b']:.2f}x; "
        f"FIFO {fifo['b'] / alone['b']:.2f}x; hashed {hashed['b'] / alone['b']:.2f}x"
    )
    print(f"A per-user / A FIFO: {fair_['a'] / fifo['a']:.2f}x (target <= 1.1x); "
          f"plain round robin {plain['a'] / fifo['a']:.2f}x; "
          f"hashed {hashed['a'] / fifo['a']:.2f}x")  # fmt: skip


def print_many(label: str, many: dict[str, Any], cores: int) -> None:
    small = many["small"]
    print(
        f"\nMany users, {label}: {many['users']} users, {many['chunks']:,} chunk tasks, submitted "
        f"in {many['submitted_in']:.2f} s (one transaction, published at its commit, with "
        "the imports nodes stopped; they start and take every user's queue at once); one "
        "imports node killed and restarted half-way"
    )
    print(
        f"  wall {many['wall']:.1f} s, CPU {many['cpu']:.1f} s (floor "
        f"{many['cpu'] / cores:.1f} s), {1000 * many['cpu'] / many['chunks']:.1f} ms CPU "
        "per chunk"
    )
    for window, (mean, low, found) in many["jain"].items():
        print(
            f"  Jain's fairness index over {len(found)} windows of {window:g} s before the "
            f"kill: mean {mean:.3f} (weighted by active users), min {low:.3f} "
            "(target >= 0.95)"
        )
        print("    each window (index/active users): "
              + " ".join(f"{j:.2f}/{n}" for j, n in found))  # fmt: skip
    print(
        f"  smallest jobs ({len(small)}, <= {max(small)[1] if small else 0} chunks): "
        f"median {statistics.median(t for t, _ in small):.2f} s, "
        f"max {max(t for t, _ in small):.2f} s"
    )
    print(
        f"  runs not succeeded: {many['failed_runs']}; rows lost: {many['rows_lost']}; "
        f"runs resumed by the reconciler: {many['resumed']}; "
        f"after the sweep: {many['registry_left']} registry rows, "
        f"{many['queues_left']} queues, {many['bindings_left']} bindings left"
    )


if __name__ == "__main__":
    main()
