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

from proj.settings import *  # noqa: F403

# Hashing passwords properly is slow and beside the point in tests.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
