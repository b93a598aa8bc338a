"""How long a run takes to recover when its refresh nodes are killed mid-run.

    .venv/bin/python bench/recovery.py [--products 2000] [--latency-ms 200]
                                       [--stall-after 90] [--interval 15]

A refresh run starts on the real stack (refresh and callbacks nodes, the reconciler loop as
the Procfile runs it, the stand-in in its own process); once products are being refreshed,
every refresh node is killed with SIGKILL and started again at once (what systemd or a
process manager does). The acknowledged-late messages the dead nodes held stay unacked in
Redis for the visibility timeout, so only the reconciler brings the run back. Prints the
time from the kill to the run settling (status callback received), next to the promise:
RUN_STALL_AFTER + one reconciler interval (+ the remaining work). Uses a broker and a
database of its own, like bench/refresh.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
from bench.refresh import VAR_DIR, StandIn, configure, prepare_database  # noqa: E402
from core.fleet import WorkerFleet  # noqa: E402
from devtools.redis_server import PrivateRedis, free_port  # noqa: E402
from proj import topology  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--stall-after", type=int, default=90)
    parser.add_argument("--interval", type=float, default=15.0)
    args = parser.parse_args()
    args.database = "sqlite"
    broker = PrivateRedis(VAR_DIR / "redis-recovery")
    broker.start()
    env = configure(args, broker.url, f"http://127.0.0.1:{free_port()}")
    env["RUN_STALL_AFTER"] = str(args.stall_after)
    import django

    django.setup()
    from devtools.demo import demo_sku
    from proj.celery import app
    from shop.models import Product, RefreshRun
    from shop.workflows import refresh_run_request

    prepare_database(env["DATABASE_URL"])
    Product.objects.bulk_create(
        Product(sku=demo_sku(i), name=f"placeholder {i}") for i in range(1, args.products + 1)
    )
    stub = StandIn(int(env["SUPPLIER_API_URL"].rsplit(":", 1)[1]), args.latency_ms, env)
    fleet = WorkerFleet(app, env, VAR_DIR / "log" / "recovery", f"bench-{os.getpid()}")
    pools = tuple(p for p in topology.POOLS if p.name in ("refresh", "callbacks"))
    reconciler = subprocess.Popen(
        [sys.executable, "manage.py", "reconcile_runs", "--loop", str(args.interval)],
        cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        fleet.start(pools)
        run, _ = refresh_run_request(
            product_ids=list(Product.objects.values_list("pk", flat=True)), trigger="command"
        )
        while not RefreshRun.objects.get(pk=run.pk).succeeded:
            time.sleep(0.05)
        fleet.kill("refresh")
        killed = time.monotonic()
        run.refresh_from_db()
        print(f"Killed every refresh node at {run.done:,}/{run.total:,}; starting them again.")
        fleet.restart("refresh")
        while not run.is_settled:
            time.sleep(0.2)
            run.refresh_from_db()
        recovered = time.monotonic() - killed
    finally:
        reconciler.terminate()
        fleet.stop()
        stub.stop()
        broker.stop()
    promise = args.stall_after + args.interval
    resumed = run.events.filter(kind="resumed").count()
    print(
        f"\nRun {run.status}: {run.succeeded:,}/{run.total:,} products, callback "
        f"{run.callback_state}; {resumed} resume(s) by the reconciler.\n"
        f"Kill -> settled: {recovered:.1f} s; RUN_STALL_AFTER {args.stall_after} s + one "
        f"reconciler interval {args.interval:g} s = {promise:g} s (+ the work left to do)."
    )
    return 0 if run.status == RefreshRun.Status.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
