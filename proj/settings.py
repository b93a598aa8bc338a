"""Settings for the shop back office, read from the environment with safe local defaults.

Locally nothing needs to be set: SQLite in var/, the Redis on 127.0.0.1, DEBUG on. In
production set DJANGO_DEBUG=0, DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS and DATABASE_URL.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from proj import topology

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SHOP_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    return [v.strip() for v in value.split(",") if v.strip()] if value else default


DEBUG = env_bool("DJANGO_DEBUG", True)

if DEBUG:
    SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or "local-dev-only-not-secret"
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
else:
    SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])
    if not SECRET_KEY:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set and DJANGO_DEBUG is off. Set it to a long random "
            "string, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'."
        )
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            "DJANGO_ALLOWED_HOSTS is not set and DJANGO_DEBUG is off. Set it to the "
            "comma-separated host names this site answers to, e.g. shop.example.com."
        )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "core",
    "shop",
    "reports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "proj.urls"
WSGI_APPLICATION = "proj.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database --------------------------------------------------------------------------
# SQLite by default; DATABASE_URL=postgres://... switches to PostgreSQL (psycopg 3).
DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'shop.sqlite3'}")
_db = dj_database_url.parse(DATABASE_URL)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    _db["OPTIONS"] = {
        # IMMEDIATE takes the write lock at BEGIN, so concurrent writers wait for the busy
        # timeout instead of failing half-way with "database is locked".
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        # WAL lets readers (the admin) run while a worker writes.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # The test database is a file, not :memory:, so worker processes can share it.
    _db["TEST"] = {"NAME": str(VAR_DIR / "test-shop.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # Celery closes the Django connection after every task. Without a pool, each task on a
    # gevent worker would open a new PostgreSQL connection; with Django's psycopg pool,
    # close() just returns it. Keep DB_POOL_MAX_SIZE x processes under max_connections.
    _db["CONN_MAX_AGE"] = 0  # required by Django when the pool is on
    _db["OPTIONS"] = {
        "pool": {
            "min_size": env_int("DB_POOL_MIN_SIZE", 1),
            "max_size": env_int("DB_POOL_MAX_SIZE", 10),
            "timeout": env_int("DB_POOL_TIMEOUT", 30),
        }
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request otherwise
# Private files (report outputs): never under STATIC_ROOT or a public MEDIA_URL.
PRIVATE_STORAGE_ROOT = Path(os.environ.get("SHOP_PRIVATE_STORAGE", VAR_DIR / "private"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

# The public address of the back office, for links in emails (report ready, ...).
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

EMAIL_BACKEND = os.environ.get(
    "DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = os.environ.get("DJANGO_DEFAULT_FROM_EMAIL", "backoffice@localhost")

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}

# --- Celery ----------------------------------------------------------------------------
# Every setting below says why it is set. Queues and routes come from proj/topology.py.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
_redis_broker = CELERY_BROKER_URL.startswith(("redis://", "rediss://", "redis+socket://"))
# Keep retrying the broker at start-up instead of crashing the worker (and honcho with it).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis re-delivers an unacknowledged message after the visibility timeout. It must exceed
# the longest task (time limit) plus the longest countdown (retry backoff), or a running or
# delayed task is delivered a second time. 6 h >> 10 min limit + 10 min backoff cap.
#
# Under gevent every running task acks (and publishes retries) through the broker client's
# connection pool. kombu's Redis default of 10 connections is far below our concurrency:
# acks then fail with MaxConnectionsError and messages are redelivered or lost. Size both
# pools from the busiest worker pool of the topology.
_busiest_pool = max(pool.concurrency for pool in topology.POOLS)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 6 * 3600,
    "max_connections": 2 * _busiest_pool + 10,
}
CELERY_BROKER_POOL_LIMIT = _busiest_pool + 10

# Results live in the Django database (django-celery-results), so the admin can show them.
# Our subclass counts distinct chord parts and gathers them in one query (core/results.py).
CELERY_RESULT_BACKEND = "core.results:ChordSafeDatabaseBackend"
# Store task name, args and worker with each result: the admin and Flower show them.
CELERY_RESULT_EXTENDED = True
# Results are for monitoring and chords only; the run rows hold the real outcome.
CELERY_RESULT_EXPIRES = 7 * 24 * 3600

# JSON only, everywhere: pickle would let anyone who can write to the broker run code.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_EVENT_SERIALIZER = "json"

# A hung supplier call must not hold a worker slot for ever: hard limit kills the task,
# the soft limit lets it clean up first.
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 600)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 540)

# Queues and routes are derived from the topology. A typo in a queue name must fail loudly,
# not create a queue nobody consumes.
CELERY_TASK_QUEUES = tuple(Queue(q.name, routing_key=q.name) for q in topology.QUEUES)
CELERY_TASK_ROUTES = (topology.ROUTES, "proj.topology.route_report")
CELERY_TASK_DEFAULT_QUEUE = topology.DEFAULT_QUEUE
CELERY_TASK_CREATE_MISSING_QUEUES = False

# Our tasks are idempotent, so acknowledge after they finish: a worker that dies mid-task
# leaves the message to be redelivered instead of losing it.
CELERY_TASK_ACKS_LATE = True
# Prefetch: a gevent worker would otherwise reserve concurrency x multiplier messages and
# a short task could sit behind long ones it reserved. Multiplier 1 reserves no more than
# the pool can run; on Redis, worker_disable_prefetch stops reserving beyond free slots
# (ignored, with a warning, on RabbitMQ, where multiplier 1 is the bound).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_DISABLE_PREFETCH = _redis_broker
# With late acks, a lost broker connection would re-deliver running tasks; cancel them
# instead of running them twice at once.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True

# Events let Flower see workers and tasks; "sent" and "started" let it show queued and
# running tasks, not only finished ones.
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# The pools the `workers` command and the Procfile run; the checks compare against them.
WORKER_POOLS = topology.POOLS

# Flower: basic auth from the environment (user:password[,user:password]).
FLOWER_BASIC_AUTH = os.environ.get("FLOWER_BASIC_AUTH", "")
FLOWER_PORT = env_int("FLOWER_PORT", 5555)

# --- Supplier refresh ------------------------------------------------------------------
SUPPLIER_API_URL = os.environ.get("SUPPLIER_API_URL", "").rstrip("/")
STATUS_CALLBACK_URL = os.environ.get("STATUS_CALLBACK_URL", "")
# Explicit timeouts and a size cap on every supplier and callback call.
SUPPLIER_CONNECT_TIMEOUT = float(os.environ.get("SUPPLIER_CONNECT_TIMEOUT", "3.05"))
SUPPLIER_READ_TIMEOUT = float(os.environ.get("SUPPLIER_READ_TIMEOUT", "10"))
SUPPLIER_MAX_RESPONSE_BYTES = env_int("SUPPLIER_MAX_RESPONSE_BYTES", 1_000_000)
# Transient errors (timeouts, 5xx, 429) are retried with exponential backoff and full
# jitter: SUPPLIER_RETRY_BACKOFF x 2^n seconds, at most SUPPLIER_RETRY_BACKOFF_MAX, at most
# SUPPLIER_MAX_RETRIES times; then the product is recorded as failed.
SUPPLIER_MAX_RETRIES = env_int("SUPPLIER_MAX_RETRIES", 4)
SUPPLIER_RETRY_BACKOFF = float(os.environ.get("SUPPLIER_RETRY_BACKOFF", "2"))
SUPPLIER_RETRY_BACKOFF_MAX = float(os.environ.get("SUPPLIER_RETRY_BACKOFF_MAX", "600"))
# Products per refresh task (1 reproduces the naive one-task-per-product design) and
# concurrent supplier requests inside one task.
REFRESH_CHUNK_SIZE = env_int("REFRESH_CHUNK_SIZE", 50)
REFRESH_CHUNK_CONCURRENCY = env_int("REFRESH_CHUNK_CONCURRENCY", 10)

# --- Reports ---------------------------------------------------------------------------
# The longest date range one report may cover: bounds the work a single request can queue.
REPORTS_MAX_RANGE_DAYS = env_int("REPORTS_MAX_RANGE_DAYS", 366)
# Finished report files: private (no URL), served only by the permission-checked view.
REPORTS_STORAGE_ROOT = PRIVATE_STORAGE_ROOT / "reports"
