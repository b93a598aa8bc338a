"""What a task costs the worker by itself: plain Celery against the project, side by side.

    .venv/bin/python bench/overhead.py [--tasks 5000]

The same two tasks (a no-op, and one HTTP GET to the supplier stand-in), each counting
itself in Redis, run through a plain Celery app without Django (bench/overhead_app.py)
and through the project (Django settings, the base task, events for Flower, Django's
database connection handling), one gevent node of 40 each, on a broker of the bench's
own. Prints worker CPU per task, and the project's extra cost per task.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
from bench.refresh import TICKS, StandIn, cpu_seconds  # noqa: E402
from devtools.redis_server import PrivateRedis, free_port  # noqa: E402

VAR_DIR = BASE_DIR / "var" / "bench"


def start_worker(app: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    celery = str(Path(sys.executable).parent / "celery")
    argv = [celery, "-A", app, "worker", "-n", f"overhead-{uuid.uuid4().hex[:6]}@%h",
            "-P", "gevent", "-c", "40", "-Q", "default", "-l", "WARNING", "-O", "fair"]  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)


def measure(app: str, task: str, args: list, n: int, env: dict[str, str], broker: str) -> dict:
    import redis
    from celery import Celery

    client = redis.Redis.from_url(broker)
    sender = Celery("sender", broker=broker)
    sender.conf.task_serializer = "json"
    worker = start_worker(app, env, VAR_DIR / "overhead.log")
    try:
        warm = f"warm-{uuid.uuid4().hex}"
        for _ in range(200):
            sender.send_task(task, args=[*args, warm], queue="default")
        deadline = time.monotonic() + 120
        while int(client.get(warm) or 0) < 200:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{app} worker did not run the warm-up; see the log")
            time.sleep(0.05)
        counter = f"run-{uuid.uuid4().hex}"
        with sender.connection_for_write() as conn, sender.producer_or_acquire() as producer:
            for _ in range(n):  # published before the clock starts: the worker's cost only
                sender.send_task(task, args=[*args, counter], queue="default",
                                 producer=producer, connection=conn)  # fmt: skip
        cpu0, started = cpu_seconds(worker.pid), time.monotonic()
        while int(client.get(counter) or 0) < n:
            time.sleep(0.02)
        elapsed, cpu = time.monotonic() - started, cpu_seconds(worker.pid) - cpu0
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    return {"cpu_ms": 1000 * cpu / n, "rate": n / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    n = parser.parse_args().tasks
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    broker = PrivateRedis(VAR_DIR / "redis-overhead")
    broker.start()
    db = VAR_DIR / "overhead.sqlite3"
    env = {
        **os.environ, "CELERY_BROKER_URL": broker.url, "DJANGO_SETTINGS_MODULE": "proj.settings",
        "SHOP_ENV_FILE": "/dev/null", "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "x" * 50,
        "DJANGO_ALLOWED_HOSTS": "localhost", "DATABASE_URL": f"sqlite:///{db}",
        "SUPPLIER_API_URL": "http://127.0.0.1:9", "SHOP_DEVTOOLS": "1",
        "DJANGO_LOG_LEVEL": "WARNING", "SHOP_VAR_DIR": str(VAR_DIR),
    }  # fmt: skip
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env,
                   check=True)  # fmt: skip
    stub = StandIn(free_port(), 0, env)
    url = f"{stub.url}/products/DEMO-00001"
    rows = []
    try:
        for label, task, args in (("no-op", "devtools.tasks.bench_noop", []),
                                  ("HTTP GET", "devtools.tasks.bench_http", [url])):  # fmt: skip
            plain = measure("bench.overhead_app", task, args, n, env, broker.url)
            project = measure("proj", task, args, n, env, broker.url)
            quiet = measure("proj", task, args, n, {**env, "CELERY_TASK_EVENTS": "0"}, broker.url)
            rows.append((label, plain, project, quiet))
            print(f"{label}: plain {plain['cpu_ms']:.2f} ms, project {project['cpu_ms']:.2f} ms, "
                  f"without task events {quiet['cpu_ms']:.2f} ms", flush=True)  # fmt: skip
    finally:
        stub.stop()
        broker.stop()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n{n:,} tasks each, one gevent node x40, Redis broker of its own (clock tick "
        f"{1000 / TICKS:.0f} ms); load average after: {load}\n"
    )
    header = (
        "| Task | Plain Celery: CPU / task (ms) | tasks/s | Project (ms) | tasks/s | extra (ms)"
    )
    print(header + " | Project, task events off (ms) | extra (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, plain, project, quiet in rows:
        print(f"| {label} | {plain['cpu_ms']:.2f} | {plain['rate']:,.0f} | "
              f"{project['cpu_ms']:.2f} | {project['rate']:,.0f} | "
              f"{project['cpu_ms'] - plain['cpu_ms']:+.2f} | {quiet['cpu_ms']:.2f} | "
              f"{quiet['cpu_ms'] - plain['cpu_ms']:+.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
