"""Settings for the shop back office: one configuration for every process.

Web, workers, `celery multi`, Flower and cron all read the environment and an env file
(SHOP_ENV_FILE, default .env beside manage.py); a real environment variable wins over the
file. DEBUG is off unless DJANGO_DEBUG turns it on, and a process with DEBUG off refuses to
start without the settings production needs instead of falling back to development
defaults (the SQLite file in var/, the broker's database 0). .env.example lists them all.
"""

from __future__ import annotations

import io
import math
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import dj_database_url
import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from proj import topology

if TYPE_CHECKING:
    from django.http import HttpRequest

BASE_DIR = Path(__file__).resolve().parent.parent

# --- The env file ----------------------------------------------------------------------
ENV_FILE = Path(os.environ.get("SHOP_ENV_FILE") or BASE_DIR / ".env")
# What django-environ accepts as a setting line; anything else it would skip with a warning
# that prints the line (a secret, perhaps), so we refuse it instead.
_ENV_LINE = re.compile(r"\A(?:export )?[A-Za-z_0-9]+=")


def read_env_file(path: Path, must_exist: bool) -> None:
    """Load the file's NAME=value lines into os.environ, where nothing is set already.

    Into os.environ, not only into settings: Celery reads CELERY_BROKER_URL from there and
    the processes we start (Flower, `celery multi` nodes) inherit it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if must_exist:
            raise ImproperlyConfigured(f"SHOP_ENV_FILE={path}: no such file.") from None
        return
    except OSError as exc:
        raise ImproperlyConfigured(f"Cannot read the env file {path}: {exc.strerror}.") from exc
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not _ENV_LINE.match(line):
            raise ImproperlyConfigured(
                f"{path}, line {number}: expected NAME=value (no spaces around =, "
                "comments on their own line)."
            )
        lines.append(line)
    environ.Env.read_env(io.StringIO("\n".join(lines)), overwrite=False)


read_env_file(ENV_FILE, must_exist=bool(os.environ.get("SHOP_ENV_FILE")))

VAR_DIR = Path(os.environ.get("SHOP_VAR_DIR", BASE_DIR / "var"))

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in _TRUE | _FALSE:
        raise ImproperlyConfigured(f"{name} must be 1 or 0 (true/false, yes/no, on/off).")
    return value in _TRUE


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_float(name: str, default: float, *, positive: bool = False) -> float:
    """A number of seconds (or a rate) from the environment, refused by name if it is not
    one (or, with `positive`, not above 0: a timeout of 0 fails every call at once)."""
    value = os.environ.get(name, "")
    try:
        number = float(value) if value else float(default)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}")
    if positive and number <= 0:
        raise ImproperlyConfigured(f"{name} must be above 0, got {value!r}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    return [v.strip() for v in value.split(",") if v.strip()] if value else default


# Off unless something turns it on: `make run` and the tests do; cron and production don't.
DEBUG = env_bool("DJANGO_DEBUG", False)

# Production needs these; in development (DEBUG on) the local defaults below stand in.
REQUIRED_IN_PRODUCTION = {
    "DJANGO_SECRET_KEY": "a long random string, e.g. "
    "python -c 'import secrets; print(secrets.token_urlsafe(50))'",
    "DJANGO_ALLOWED_HOSTS": "the comma-separated host names this site answers to, "
    "e.g. shop.example.com",
    "DATABASE_URL": "e.g. postgres://shop:password@db.example.com:5432/shop "
    "(the SQLite file in var/ is for development only)",
    "CELERY_BROKER_URL": "e.g. redis://redis.example.com:6379/0",
    "SUPPLIER_API_URL": "the supplier's product API, e.g. https://api.supplier.example/v1",
}
DEVELOPMENT_DEFAULTS = {
    "DJANGO_SECRET_KEY": "local-dev-only-not-secret",
    "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1,[::1]",
    "DATABASE_URL": f"sqlite:///{VAR_DIR / 'shop.sqlite3'}",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "SUPPLIER_API_URL": "",  # `make run` points it at the stand-in
}
if not DEBUG:
    _missing = [name for name in REQUIRED_IN_PRODUCTION if not os.environ.get(name, "").strip()]
    if _missing:
        raise ImproperlyConfigured(
            "DJANGO_DEBUG is off (production) and required settings are missing:\n"
            + "".join(f"  {name} is not set: {REQUIRED_IN_PRODUCTION[name]}\n" for name in _missing)
            + f"Set them in the environment or in {ENV_FILE} (SHOP_ENV_FILE); .env.example "
            "lists every setting. On a development machine, set DJANGO_DEBUG=1 instead."
        )


def required(name: str) -> str:
    """A setting production must set; with DEBUG on, its local default when unset."""
    return os.environ.get(name, "").strip() or DEVELOPMENT_DEFAULTS[name]


SECRET_KEY = required("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = [h.strip() for h in required("DJANGO_ALLOWED_HOSTS").split(",") if h.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "axes",
    "core",
    "notifications",
    "shop",
    "reports",
    "import_export",
    "imports",
    "fulfilment",
]
# Local stand-ins (supplier API, demo data) for development and tests, never in production.
if DEBUG or env_bool("SHOP_DEVTOOLS", False):
    INSTALLED_APPS.append("devtools")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
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
                "core.context_processors.support",
            ],
        },
    },
]

# --- Database --------------------------------------------------------------------------
# DATABASE_URL=postgres://... for PostgreSQL (psycopg 3); the SQLite file in development.
DATABASE_URL = required("DATABASE_URL")
_db = dj_database_url.parse(DATABASE_URL)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Django's SQLite backend, except on gevent workers: writers wait without freezing the
    # process, and connections are reused across tasks (core/db/sqlite/base.py).
    _db["ENGINE"] = "core.db.sqlite"
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
    # After a failover or a restart, the pool would hand out connections the server has
    # already closed (one failed request or task each). core.db.postgresql tests each one on
    # checkout (one round trip) and, at the first dead one, every idle one; Django's own
    # check (CONN_HEALTH_CHECKS) would back off 1, 2, 4, 8 s per dead connection instead.
    _db["ENGINE"] = "core.db.postgresql"
    _db["CONN_MAX_AGE"] = 0  # required by Django when the pool is on
    _db["CONN_HEALTH_CHECKS"] = False  # the backend checks (see above)
    _db["OPTIONS"] = {
        # psycopg waits 130 s by default for a host that accepts the TCP connection but
        # never answers (a hung server, a half-open path), and the pool's three
        # maintenance threads wait with it instead of replacing connections.
        "connect_timeout": env_int("DB_CONNECT_TIMEOUT", 10),
        **_db.get("OPTIONS", {}),  # what DATABASE_URL's query string sets (sslmode=...) wins
        "pool": {
            "min_size": env_int("DB_POOL_MIN_SIZE", 1),
            "max_size": env_int("DB_POOL_MAX_SIZE", 6),
            "timeout": env_int("DB_POOL_TIMEOUT", 30),
        },
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

DEFAULT_FROM_EMAIL = os.environ.get("DJANGO_DEFAULT_FROM_EMAIL", "backoffice@localhost")


# --- HTTPS and the reverse proxy -------------------------------------------------------
def env_proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """`X-Forwarded-Proto` or `X-Forwarded-Proto: https` as Django's SECURE_PROXY_SSL_HEADER."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    header, _, expected = (part.strip() for part in value.partition(":"))
    if not re.fullmatch(r"[A-Za-z0-9_-]+", header):
        raise ImproperlyConfigured(f"{name} must be a header name, e.g. X-Forwarded-Proto.")
    meta = header.upper().replace("-", "_")
    return (meta if meta.startswith("HTTP_") else f"HTTP_{meta}", expected or "https")


# Behind a TLS-terminating proxy Django sees plain HTTP. Name the header the proxy sets
# (and overwrites, so a client cannot forge it) to tell Django the request was HTTPS.
# Without it, SSL redirect would loop (unless gunicorn trusts the proxy: FORWARDED_ALLOW_IPS).
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("DJANGO_SECURE_PROXY_SSL_HEADER")
if not DEBUG:
    # `manage.py check --deploy` is clean with these defaults.
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    # Load balancers probe over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# Reverse proxies in front of the web process that append the client's address to
# X-Forwarded-For (0: clients connect directly). Decides which address login lockouts see.
SHOP_PROXY_COUNT = env_int("SHOP_PROXY_COUNT", 0)


def client_ip(request: HttpRequest) -> str | None:
    """The client's address, as our own proxies saw it, for django-axes.

    Only entries our SHOP_PROXY_COUNT proxies appended are trusted, counted from the right:
    whatever a client puts in X-Forwarded-For itself cannot dodge a lockout. Without
    proxies, or for a request that did not come through them, the peer address.
    """
    from django.conf import settings

    count = settings.SHOP_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    if count and len(hops) >= count:
        return hops[-count]
    return request.META.get("REMOTE_ADDR")


# --- Failed logins (django-axes) -------------------------------------------------------
# After AXES_FAILURE_LIMIT failures for one username from one address, that pair is locked
# out for AXES_COOLOFF_MINUTES (0: until an administrator lifts it in Axes > Access
# attempts, or `manage.py axes_reset_username NAME`). By pair, so an attacker elsewhere
# cannot lock a colleague out. A success resets the count; an attempt while locked out
# starts the wait again.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
_cooloff_minutes = env_int("AXES_COOLOFF_MINUTES", 15)
AXES_COOLOFF_TIME = timedelta(minutes=_cooloff_minutes) if _cooloff_minutes > 0 else None
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = client_ip
# No start-up banner in every process's output (cron mails any output); failures and
# lockouts are still logged.
AXES_VERBOSE = False
AXES_COOLOFF_MESSAGE = (
    f"Too many failed logins: this username is locked out from your address for "
    f"{_cooloff_minutes} minutes after the last attempt. Wait, then try again, or ask an "
    "administrator to lift the lock."
)
AXES_PERMALOCK_MESSAGE = (
    "Too many failed logins: this username is locked out from your address until an "
    "administrator lifts the lock."
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # A permission refusal is one line in the log, not a traceback.
    "filters": {"refusals": {"()": "core.logging.PermissionDeniedWithoutTraceback"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["refusals"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}
# Whom the "permission needed" page tells staff to ask.
SHOP_SUPPORT_CONTACT = os.environ.get("SHOP_SUPPORT_CONTACT", "an administrator of the back office")
# Times with seconds and durations in seconds everywhere in the admin (proj/formats/).
FORMAT_MODULE_PATH = ["proj.formats"]

# --- Celery ----------------------------------------------------------------------------
# Every setting below says why it is set. Queues and routes come from proj/topology.py.
CELERY_BROKER_URL = required("CELERY_BROKER_URL")
_redis_broker = CELERY_BROKER_URL.startswith(("redis://", "rediss://", "redis+socket://"))
# Keep retrying the broker at start-up instead of crashing the worker (and honcho with it).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis re-delivers an unacknowledged message after the visibility timeout. It must exceed
# the longest task (hard time limit, 10 min) plus the longest countdown a task waits in a
# worker's memory (retry backoff cap, 10 min), or a delayed task is delivered twice: 30 min.
# It is no longer what recovers a run from a dead worker (the reconciler does that within
# RUN_STALL_AFTER); it is the backstop for the rest. A system check keeps the inequality.
#
# Under gevent every running task acks (and publishes retries) through the broker client's
# connection pool. kombu's Redis default of 10 connections is far below our concurrency:
# acks then fail with MaxConnectionsError and messages are redelivered or lost. Size both
# pools from the busiest worker pool of the topology.
_busiest_pool = max(pool.concurrency for pool in topology.POOLS)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 30 * 60),
    "max_connections": 2 * _busiest_pool + 10,
}
CELERY_BROKER_POOL_LIMIT = _busiest_pool + 10
# How long an idle gevent node's BRPOP waits on Redis before it is sent again (kombu's
# default). Queue changes no longer wait for it (core.greenpoll unblocks it).
WORKER_BRPOP_TIMEOUT = env_int("WORKER_BRPOP_TIMEOUT", 1)

# The run rows hold every outcome, so tasks store no results (a result row per task was
# most of the per-task cost): the backend (django-celery-results in the Django database)
# keeps only the chord counters. Our subclass counts distinct chord parts, never joins
# results, and retries its bookkeeping on transient database errors (core/results.py).
CELERY_RESULT_BACKEND = "core.results:ChordSafeDatabaseBackend"
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = 7 * 24 * 3600
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
CELERY_RESULT_BACKEND_MAX_RETRIES = 10
# Publishing from a web request must not hang when the broker is down: a short retry,
# then the outbox keeps the message and the reconciler publishes it later.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 3

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
CELERY_TASK_ROUTES = (topology.ROUTES,)
CELERY_TASK_DEFAULT_QUEUE = topology.DEFAULT_QUEUE
CELERY_TASK_CREATE_MISSING_QUEUES = False

# Our tasks are idempotent, so acknowledge after they finish: a worker that dies mid-task
# leaves the message to be redelivered instead of losing it. A prefork child killed mid-task
# (OOM, segfault) gets its message requeued too; a message that keeps killing its worker is
# dead-lettered after TASK_MAX_DELIVERIES deliveries (core.tasks.ShopTask).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Prefetch: a gevent worker would otherwise reserve concurrency x multiplier messages and
# a short task could sit behind long ones it reserved. Multiplier 1 reserves no more than
# the pool can run; on Redis, worker_disable_prefetch stops reserving beyond free slots
# (ignored, with a warning, on RabbitMQ, where multiplier 1 is the bound).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_DISABLE_PREFETCH = _redis_broker
# A lost broker connection does not cancel running tasks (Celery 6 will default to
# cancelling): a task cancelled after the mail server accepted its message, and before it
# recorded that, left the message to be sent again once its claim ran out. Every task
# here is safe to run twice, even at once (claims, leases, guarded updates), so one that
# finishes with nobody to take its ack is only a message re-delivered, found done.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False

# Events let Flower see workers and tasks; "sent" and "started" let it show queued and
# running tasks, not only finished ones.
# They are most of what a task costs a worker beyond the task itself (three PUBLISHes per
# task; measured with bench/overhead.py): CELERY_TASK_EVENTS=0 trades Flower's task views
# for that, Flower still sees the workers.
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_TASK_EVENTS", True)
CELERY_TASK_SEND_SENT_EVENT = CELERY_WORKER_SEND_TASK_EVENTS
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Ctrl-C / SIGTERM: a warm shutdown that waits this long for running tasks, then requeues
# what is left (late acks) instead of losing it; `make run` waits longer than this.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env_float("CELERY_SOFT_SHUTDOWN_TIMEOUT", 60)
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = True

# --- Runs always finish ---------------------------------------------------------------
# The reconciler (manage.py reconcile_runs) resumes a run that made no progress for this
# long (a killed worker, lost messages, a chord that never fired). Longer than the slowest
# chunk: 50 products, 10 at a time, each up to connect + read timeout.
RUN_STALL_AFTER = env_int("RUN_STALL_AFTER", 90)
# How often `reconcile_runs --loop` runs (the Procfile and make run); cron runs it every minute.
RECONCILE_INTERVAL = env_int("RECONCILE_INTERVAL", 15)
# After this many resumes, the items still unfinished are failed and the run finishes.
RUN_MAX_RESUMES = env_int("RUN_MAX_RESUMES", 5)
# Transient database errors: retries per task (exponential backoff from 1 s, at most 60 s).
TASK_DB_MAX_RETRIES = env_int("TASK_DB_MAX_RETRIES", 8)
# A message delivered this many times without finishing (its worker died each time) is
# dead-lettered instead of run again.
TASK_MAX_DELIVERIES = env_int("TASK_MAX_DELIVERIES", 3)

# The pools the `workers` command and the Procfile run; the checks compare against them.
WORKER_POOLS = topology.POOLS

# Flower: basic auth from the environment (user:password[,user:password]).
FLOWER_BASIC_AUTH = os.environ.get("FLOWER_BASIC_AUTH", "")
FLOWER_PORT = env_int("FLOWER_PORT", 5555)

# --- Supplier refresh ------------------------------------------------------------------
SUPPLIER_API_URL = required("SUPPLIER_API_URL").rstrip("/")
# Optional, also in production: without it a finished run records "not sent".
STATUS_CALLBACK_URL = os.environ.get("STATUS_CALLBACK_URL", "")
# Explicit timeouts and a size cap on every supplier and callback call.
SUPPLIER_CONNECT_TIMEOUT = env_float("SUPPLIER_CONNECT_TIMEOUT", 3.05, positive=True)
SUPPLIER_READ_TIMEOUT = env_float("SUPPLIER_READ_TIMEOUT", 10, positive=True)
SUPPLIER_MAX_RESPONSE_BYTES = env_int("SUPPLIER_MAX_RESPONSE_BYTES", 1_000_000)
# Transient errors (timeouts, 5xx, 429) are retried with exponential backoff and full
# jitter: SUPPLIER_RETRY_BACKOFF x 2^n seconds, at most SUPPLIER_RETRY_BACKOFF_MAX, at most
# SUPPLIER_MAX_RETRIES times; then the product is recorded as failed.
SUPPLIER_MAX_RETRIES = env_int("SUPPLIER_MAX_RETRIES", 4)
SUPPLIER_RETRY_BACKOFF = env_float("SUPPLIER_RETRY_BACKOFF", 2)
SUPPLIER_RETRY_BACKOFF_MAX = env_float("SUPPLIER_RETRY_BACKOFF_MAX", 600)
# The longest countdown any task waits in a worker's memory (Redis visibility: core.E020).
CELERY_MAX_COUNTDOWN = max(SUPPLIER_RETRY_BACKOFF_MAX, 60)
# Products per refresh task (1 reproduces the naive one-task-per-product design) and
# concurrent supplier requests inside one task.
REFRESH_CHUNK_SIZE = env_int("REFRESH_CHUNK_SIZE", 100)
REFRESH_CHUNK_CONCURRENCY = env_int("REFRESH_CHUNK_CONCURRENCY", 20)
# While some of a chunk's products are still being fetched (one waiting out the read
# timeout), the chunk writes what answered every this many seconds: the run's progress
# and those products' outcomes do not wait for the slowest. A quick chunk writes once.
REFRESH_PROGRESS_EVERY = env_float("REFRESH_PROGRESS_EVERY", 2, positive=True)
# Keep-alive connections to the supplier per process: every request in flight at once.
SUPPLIER_POOL_SIZE = _busiest_pool * REFRESH_CHUNK_CONCURRENCY

# --- Reports ---------------------------------------------------------------------------
# The longest date range one report may cover: bounds the work a single request can queue.
REPORTS_MAX_RANGE_DAYS = env_int("REPORTS_MAX_RANGE_DAYS", 366)
# A part smaller than this many orders costs more (a task, a stored partial, merging it)
# than running it beside another part saves; a report is split into at most as many parts
# as its pool has slots. Measured (bench/reports.py --orders N): SQLite aggregates on one
# core and gains from two date windows at 200,000 orders (0.51x). PostgreSQL runs one query
# on its parallel workers: its parts split the aggregates, not the dates (sales summary).
REPORTS_MIN_ORDERS_PER_PART = env_int(
    "REPORTS_MIN_ORDERS_PER_PART",
    100_000 if _db["ENGINE"] == "core.db.postgresql" else 25_000,
)
# Finished report files: private (no URL), served only by the permission-checked view.
REPORTS_STORAGE_ROOT = PRIVATE_STORAGE_ROOT / "reports"


# === Catalogue imports (imports/, docs/imports.md) =====================================
# Per-user queues: `imports.user.<id>` is a queue family of the topology, so the checks and
# Celery's queue table know its members by name (core/families.py) while
# task_create_missing_queues stays off.
QUEUE_FAMILIES = topology.FAMILIES
_user_queues = topology.family_of("imports.user.0")
assert _user_queues is not None
# At most this many user queues are active at once (each is one more key every imports
# node polls); beyond it, users share FAIR_OVERFLOW_QUEUES hashed overflow queues.
FAIR_MAX_QUEUES = env_int("FAIR_MAX_QUEUES", _user_queues.max_active)
FAIR_OVERFLOW_QUEUES = env_int("FAIR_OVERFLOW_QUEUES", _user_queues.overflow)
# A drained queue with no import in flight is removed after this many idle seconds (the
# reconciler's pass does it); a user who imports again soon keeps theirs.
FAIR_QUEUE_IDLE_SECONDS = env_int("FAIR_QUEUE_IDLE_SECONDS", 300)
# How long to wait for the imports nodes to answer a control command (add/cancel consumer,
# active_queues) before treating a silent node as not (yet) consuming.
FAIR_CONTROL_TIMEOUT = env_float("FAIR_CONTROL_TIMEOUT", 1.0, positive=True)
# Small imports first (Redis): the first FAIR_PRIORITY_CHUNKS chunks of a queue's backlog
# outrank the next 4x, which outrank the next 16x, which outrank the rest; 0 turns it off
# (plain round robin between users). imports.fair.chunk_priority says why.
FAIR_PRIORITY_CHUNKS = env_int("FAIR_PRIORITY_CHUNKS", 16)
if (
    FAIR_MAX_QUEUES < 0
    or FAIR_OVERFLOW_QUEUES < 1
    or FAIR_QUEUE_IDLE_SECONDS < 0
    or FAIR_PRIORITY_CHUNKS < 0
):
    raise ImproperlyConfigured(
        "FAIR_MAX_QUEUES, FAIR_QUEUE_IDLE_SECONDS and FAIR_PRIORITY_CHUNKS must be 0 or more, "
        "FAIR_OVERFLOW_QUEUES 1 or more."
    )
# Confirmed rows per chunk task: smaller chunks interleave users more finely (a newcomer
# waits for at most one chunk per worker slot), bigger ones cost less per row.
IMPORTS_CHUNK_SIZE = env_int("IMPORTS_CHUNK_SIZE", 20)
# An upload larger than this is refused from its Content-Length, before a byte of it is
# read or written anywhere (imports/uploads.py); also the limit for `import_catalogue`.
IMPORTS_MAX_UPLOAD_BYTES = env_int("IMPORTS_MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
IMPORTS_MAX_ROWS = env_int("IMPORTS_MAX_ROWS", 100_000)
# Uploaded files and files waiting for confirmation: private, like report files.
IMPORTS_STORAGE_ROOT = PRIVATE_STORAGE_ROOT / "imports"
FILE_UPLOAD_HANDLERS = [
    "imports.uploads.SizeLimitUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# django-import-export: the admin's upload, dry run and preview. Its log entries would be
# one per row of a big file; the run page is the record instead.
IMPORT_EXPORT_SKIP_ADMIN_LOG = True
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "add"
# === Notifications (issue 10): email over SMTP, transactional and bulk =====================
# Everything the notifications app reads, in one block. Mail goes out through Django's SMTP
# backend, also in development: `make run` points EMAIL_HOST/EMAIL_PORT at the local sink
# (`manage.py smtp_sink`). The console backend the default used to be reports "sent" for
# mail nobody received; set DJANGO_EMAIL_BACKEND to it explicitly if that is what you want.
EMAIL_BACKEND = os.environ.get(
    "DJANGO_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend"
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
# A hung SMTP server must not hold a worker slot: seconds per socket operation.
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10, positive=True)
# Transient SMTP errors (connection refused, 4xx): at most EMAIL_MAX_RETRIES more attempts,
# EMAIL_RETRY_BACKOFF x 2^n seconds with full jitter, at most EMAIL_RETRY_BACKOFF_MAX.
EMAIL_MAX_RETRIES = env_int("EMAIL_MAX_RETRIES", 5)
EMAIL_RETRY_BACKOFF = env_float("EMAIL_RETRY_BACKOFF", 2)
EMAIL_RETRY_BACKOFF_MAX = env_float("EMAIL_RETRY_BACKOFF_MAX", 300)
# A retry waits in a worker's memory: the Redis visibility timeout must cover it (core.E020).
CELERY_MAX_COUNTDOWN = max(CELERY_MAX_COUNTDOWN, EMAIL_RETRY_BACKOFF_MAX)
# The provider's limit on bulk email, messages per second for the whole fleet (0: none).
# Transactional mail is never held by it.
EMAIL_BULK_MAX_PER_SECOND = env_int("EMAIL_BULK_MAX_PER_SECOND", 100)
# Where the shared limiter keeps its window: a Redis every bulk worker on every host reaches
# (the broker's, by default). Required when the broker is RabbitMQ and a limit is set.
EMAIL_BULK_LIMITER_URL = os.environ.get("EMAIL_BULK_LIMITER_URL", "") or (
    CELERY_BROKER_URL if _redis_broker else ""
)
# Recipients per batch: one SMTP connection, one database round trip per slice.
EMAIL_BULK_BATCH_SIZE = env_int("EMAIL_BULK_BATCH_SIZE", 100)
# Messages a batch claims at a time (one guarded UPDATE, one write of their outcomes);
# each still takes its own token from the limiter just before it is sent.
EMAIL_BULK_SLICE = env_int("EMAIL_BULK_SLICE", 10)
# Batch tasks in flight per campaign send: enough to keep the limit busy, few enough that
# the bulk queue never holds more than a handful of messages (see docs/notifications.md).
EMAIL_BULK_LANES = env_int("EMAIL_BULK_LANES", 4)
# Campaign fan-out: recipients read and written per transaction.
CAMPAIGN_FANOUT_CHUNK = env_int("CAMPAIGN_FANOUT_CHUNK", 2000)
# How long a claim on a message (one SMTP conversation, each step bounded by EMAIL_TIMEOUT)
# or on a batch (renewed per slice) lasts; after it, `notifications_sweep` and the other
# lanes treat the worker that held it as gone.
NOTIFY_CLAIM_SECONDS = env_int("NOTIFY_CLAIM_SECONDS", 120)
# === end of notifications =================================================================

# --- order fulfilment (fulfilment/, docs/fulfilment.md) -------------------------------------
# Warehouse codes; the topology derives fulfilment.<stage>.<code> queues from the same
# variable (proj/topology/fulfilment.py), so changing it needs a Procfile regeneration.
FULFILMENT_WAREHOUSES = topology.fulfilment.WAREHOUSES
# A batch closes when it holds this many orders, or when its oldest order has waited
# FULFILMENT_BATCH_MAX_WAIT seconds (the reconciler's pass closes overdue ones after a
# restart; an aggregator task scheduled for the deadline closes them sooner).
FULFILMENT_BATCH_SIZE = env_int("FULFILMENT_BATCH_SIZE", 50)
FULFILMENT_BATCH_MAX_WAIT = env_int("FULFILMENT_BATCH_MAX_WAIT", 30)
# The warehouse API (pick) and the carrier API (ship); `make run` starts stand-ins there.
FULFILMENT_WAREHOUSE_API_URL = os.environ.get(
    "FULFILMENT_WAREHOUSE_API_URL", "http://127.0.0.1:8002"
).rstrip("/")
FULFILMENT_CARRIER_API_URL = os.environ.get(
    "FULFILMENT_CARRIER_API_URL", "http://127.0.0.1:8003"
).rstrip("/")
FULFILMENT_CONNECT_TIMEOUT = env_float("FULFILMENT_CONNECT_TIMEOUT", 3.05, positive=True)
FULFILMENT_READ_TIMEOUT = env_float("FULFILMENT_READ_TIMEOUT", 20, positive=True)
# Transient API errors (timeouts, 5xx, 429) retry the stage with exponential backoff and
# full jitter; an order the API refuses is split out and retried alone as often.
FULFILMENT_MAX_RETRIES = env_int("FULFILMENT_MAX_RETRIES", 5)
FULFILMENT_RETRY_BACKOFF = env_float("FULFILMENT_RETRY_BACKOFF", 2)
FULFILMENT_RETRY_BACKOFF_MAX = env_float("FULFILMENT_RETRY_BACKOFF_MAX", 300)
# Tell the customer when their order ships (a transactional notification).
FULFILMENT_NOTIFY_CUSTOMERS = env_bool("FULFILMENT_NOTIFY_CUSTOMERS", True)
FULFILMENT_LABELS_ROOT = PRIVATE_STORAGE_ROOT / "labels"
