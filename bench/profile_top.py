"""Summarise py-spy collapsed stacks (`--format raw`): where the on-CPU samples went.

    .venv/bin/python bench/profile_top.py var/bench/profile-project-10000-*.txt

Prints the share of samples per frame (inclusive: anywhere in the stack) for our code and
the libraries, and a bucketed view (ORM, HTTP client, gevent, kombu/Celery, ...).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

BUCKETS = {
    "Django ORM / SQL": ("django/db/",),
    "sqlite3 / psycopg": ("sqlite3", "psycopg"),
    "HTTP client (geventhttpclient, urllib3, http.client)": (
        "geventhttpclient/",
        "requests/",
        "urllib3/",
        "http/client",
    ),
    "JSON": ("json/",),
    "gevent": ("gevent/",),
    "kombu / redis client": ("kombu/", "redis/"),
    "Celery": ("celery/", "billiard/"),
    "our code": ("/work/main/core/", "/work/main/shop/"),
}


def main(paths: list[str]) -> None:
    inclusive: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in Path(path).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            for frame in set(frames):
                inclusive[frame] += n
            leaf = frames[-1]
            bucket = next(
                (b for b, keys in BUCKETS.items() if any(k in leaf for k in keys)), "other"
            )
            buckets[bucket] += n
    print(f"{total} samples\n\nBy where the CPU was (leaf frame):")
    for name, n in buckets.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\nInclusive, top 40:")
    for frame, n in inclusive.most_common(40):
        print(f"  {100 * n / total:5.1f}%  {frame[:150]}")


if __name__ == "__main__":
    main(sys.argv[1:])
