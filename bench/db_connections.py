"""What closing the Django connection around every task costs on PostgreSQL under gevent.

Celery's Django fixup closes the database connection before and after each task. This
runs the same "task" (one small query, then close, as the fixup does) in N greenlets,
side by side in one run: through Django's psycopg pool (our setting: close() returns the
connection to the pool) and with plain connections (close() tears down TCP + auth, the
next task connects again). Prints tasks per second and the ratio.

    .venv/bin/python bench/db_connections.py [--tasks 2000] [--greenlets 20]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent.pool  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")  # a local run: development defaults apply
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--greenlets", type=int, default=20)
    args = parser.parse_args()

    from django.conf import settings

    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        sys.exit("DATABASE_URL must point at PostgreSQL for this benchmark.")
    pooled = dict(settings.DATABASES["default"])
    pooled["OPTIONS"] = {"pool": {"min_size": 1, "max_size": args.greenlets, "timeout": 30}}
    direct = dict(settings.DATABASES["default"], OPTIONS={})
    settings.DATABASES["pooled"], settings.DATABASES["direct"] = pooled, direct

    import django

    django.setup()
    from django.db import connections

    def task(alias: str) -> None:
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        connection.close()  # what Celery's fixup does after every task

    def run(alias: str) -> float:
        task(alias)  # warm up (the pool opens its first connection)
        pool = gevent.pool.Pool(args.greenlets)
        start = time.perf_counter()
        for _ in range(args.tasks):
            pool.spawn(task, alias)
        pool.join(raise_error=True)
        return args.tasks / (time.perf_counter() - start)

    results = {alias: run(alias) for alias in ("pooled", "direct")}
    print(f"{args.tasks} tasks, {args.greenlets} greenlets, PostgreSQL, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")  # fmt: skip
    print("| connections | tasks/s |")
    print("| --- | ---: |")
    for alias, rate in results.items():
        print(f"| {alias} | {rate:,.0f} |")
    print(f"pooled / direct: {results['pooled'] / results['direct']:.1f}x")


if __name__ == "__main__":
    main()
