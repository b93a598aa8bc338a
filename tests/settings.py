"""Test settings: the project's settings, with the broker on its own Redis database.

Worker subprocesses started by the tests load this module too, so both sides agree.
"""

import os
from pathlib import Path

# The suite never reads an operator's env file: what it runs on is set here.
os.environ["SHOP_ENV_FILE"] = os.devnull
# DEBUG is off by default (production); the suite runs the development configuration.
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("SHOP_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
# What production requires, so a test may run a command with DJANGO_DEBUG=0. No test talks
# to this supplier address: the workers get the stand-in's URL.
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-not-secret")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{os.environ['SHOP_VAR_DIR']}/shop.sqlite3")
os.environ.setdefault("SUPPLIER_API_URL", "http://127.0.0.1:9/no-supplier-in-this-process")
# Workers and the test process share one database; a small pool per process keeps the
# whole fleet under PostgreSQL's max_connections.
os.environ.setdefault("DB_POOL_MAX_SIZE", "6")
# The stand-ins and demo data live in the devtools app, installed for tests.
os.environ.setdefault("SHOP_DEVTOOLS", "1")
# Short timeouts and backoff so failure paths take seconds, not minutes.
for name, value in {
    "SUPPLIER_CONNECT_TIMEOUT": "1",
    "SUPPLIER_READ_TIMEOUT": "1",
    "SUPPLIER_MAX_RETRIES": "2",
    "SUPPLIER_RETRY_BACKOFF": "0.2",
    "SUPPLIER_RETRY_BACKOFF_MAX": "2",
    # Under the read timeout, so a chunk with a slow product writes the others first.
    "REFRESH_PROGRESS_EVERY": "0.1",
    "TASK_DB_MAX_RETRIES": "3",
    "DB_CONNECT_TIMEOUT": "5",
    # A handful of test orders still split a report into parts, so parts run in parallel.
    "REPORTS_MIN_ORDERS_PER_PART": "1",
    "FULFILMENT_CONNECT_TIMEOUT": "1",
    "FULFILMENT_READ_TIMEOUT": "1",
    "FULFILMENT_MAX_RETRIES": "2",
    "FULFILMENT_RETRY_BACKOFF": "0.2",
    "FULFILMENT_RETRY_BACKOFF_MAX": "1",
    "FULFILMENT_BATCH_SIZE": "5",
    "FULFILMENT_BATCH_MAX_WAIT": "2",
}.items():
    os.environ.setdefault(name, value)

from proj.settings import *  # noqa: E402, F403

# Hashing passwords properly is slow and beside the point in tests.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _forget_content_types(**kwargs: object) -> None:
    """Workers outlive the tests: each test's flush recreates content types with new ids, so
    a worker must not keep the ids it cached in an earlier test (outbox rows and dead
    letters of runs point at them)."""
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()


def _connect_worker_signals() -> None:
    from celery.signals import task_prerun

    task_prerun.connect(_forget_content_types, weak=False)


_connect_worker_signals()
