"""Test settings: the project's settings, with the broker on its own Redis database.

Worker subprocesses started by the tests load this module too, so both sides agree.
"""

import os
from pathlib import Path

os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("SHOP_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
# Workers and the test process share one database; a small pool per process keeps the
# whole fleet under PostgreSQL's max_connections.
os.environ.setdefault("DB_POOL_MAX_SIZE", "6")
# Short timeouts and backoff so failure paths take seconds, not minutes.
for name, value in {
    "SUPPLIER_CONNECT_TIMEOUT": "1",
    "SUPPLIER_READ_TIMEOUT": "1",
    "SUPPLIER_MAX_RETRIES": "2",
    "SUPPLIER_RETRY_BACKOFF": "0.2",
    "SUPPLIER_RETRY_BACKOFF_MAX": "2",
}.items():
    os.environ.setdefault(name, value)

from proj.settings import *  # noqa: E402, F403

# Hashing passwords properly is slow and beside the point in tests.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
