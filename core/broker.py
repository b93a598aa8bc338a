"""What the Redis broker must guarantee for messages not to vanish, checked on the server.

Redis is a cache first: with an eviction policy other than `noeviction` it deletes keys
when memory is full, and queued messages are keys. Without persistence a restart loses
every queued message (the reconciler re-publishes run work, nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://")


@dataclass(frozen=True)
class BrokerProblem:
    severity: str  # "error", "warning" or "info" (could not ask)
    message: str
    hint: str


def redis_broker(url: str) -> bool:
    return url.startswith(REDIS_SCHEMES)


def broker_problems(url: str, *, debug: bool, timeout: float = 2.0) -> list[BrokerProblem]:
    """Ask the broker's Redis about eviction and persistence; [] when all is well."""
    if not redis_broker(url):
        return []
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        memory = client.info("memory")
        persistence = client.info("persistence")
    except redis.RedisError as exc:
        return [
            BrokerProblem(
                "info",
                f"Could not ask the broker Redis about eviction and persistence: {exc}.",
                "Start Redis (scripts/ensure-redis locally) or fix CELERY_BROKER_URL.",
            )
        ]
    finally:
        client.close()
    problems = []
    policy = memory.get("maxmemory_policy", "noeviction")
    if policy != "noeviction":
        problems.append(
            BrokerProblem(
                "error",
                f"The broker Redis has maxmemory-policy {policy}: when memory is full it "
                "evicts keys, silently deleting queued messages.",
                "Set maxmemory-policy noeviction (redis.conf, or CONFIG SET "
                "maxmemory-policy noeviction); use a separate Redis for caching.",
            )
        )
    if not debug and not _persists(client, persistence):
        problems.append(
            BrokerProblem(
                "warning",
                "The broker Redis persists nothing (no AOF, no RDB snapshots): a restart "
                "loses every queued message. Runs are re-published by the reconciler; other "
                "tasks are lost.",
                "Enable appendonly yes (appendfsync everysec) on the broker Redis.",
            )
        )
    return problems


def _persists(client: redis.Redis, persistence: dict) -> bool:
    if persistence.get("aof_enabled"):
        return True
    try:
        save = client.config_get("save").get("save", "")
    except redis.RedisError:  # CONFIG is disabled on many managed Redis: assume they persist
        return True
    return bool(str(save).strip())
