"""Production safety, seen from the outside: the env file, refusals, HTTPS, lockouts, JSON."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import F
from django.test import Client
from kombu import Connection

from core.fleet import BASE_DIR, database_url
from core.waiting import wait_for
from proj.settings import REQUIRED_IN_PRODUCTION
from shop.models import Product, RefreshRun
from tests.support.faults import PrivateRedis

# What a production env file must hold, and nothing else: every test adds what it shows.
PRODUCTION = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "shop.example.com",
    "DATABASE_URL": "postgres://shop:pw@db.example.com:5432/shop",
    "CELERY_BROKER_URL": "redis://broker.example.com:6379/3",
    "SUPPLIER_API_URL": "https://api.supplier.example/v1",
}

# Printed by `manage.py shell -c`: what a process made of its configuration.
SHOW_SETTINGS = """
import json
from django.conf import settings
from proj.celery import app
db = settings.DATABASES["default"]
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "database": [db["ENGINE"], db["HOST"], db["NAME"]],
    "broker": settings.CELERY_BROKER_URL,
    "celery_broker": app.conf.broker_url,
    "supplier": settings.SUPPLIER_API_URL,
    "devtools": "devtools" in settings.INSTALLED_APPS,
}))
"""


def write_env_file(directory: Path, values: dict[str, str], *extra_lines: str) -> Path:
    """An env file as an operator writes it, with its own var/ so nothing lands in ours."""
    lines = ["# written by the test", *(f"{k}={v}" for k, v in values.items()), *extra_lines]
    lines.append(f"SHOP_VAR_DIR={directory / 'var'}")
    path = directory / "shop.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def as_cron(
    *args: str, env_file: Path | str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """manage.py as cron runs it: nothing in the environment but PATH (and `env`)."""
    bare = {"PATH": os.environ["PATH"], **env}
    if env_file is not None:
        bare["SHOP_ENV_FILE"] = str(env_file)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR, env=bare, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def shown_settings(env_file: Path, **env: str) -> dict:
    result = as_cron("shell", "--no-imports", "-c", SHOW_SETTINGS, env_file=env_file, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- One configuration: the env file --------------------------------------------------


def test_cron_with_an_empty_environment_runs_on_the_env_file(
    tmp_path, transactional_db, isolated_broker
):
    """The README's crontab line: the run row lands in the file's database, its tasks on
    the file's broker, not in var/'s SQLite file or the broker's database 0."""
    conn, broker = isolated_broker
    Product.objects.create(sku="CRON-1", name="from cron")
    env_file = write_env_file(
        tmp_path,
        {
            **PRODUCTION,
            "DATABASE_URL": database_url(connection.settings_dict),
            "CELERY_BROKER_URL": conn.as_uri(),
        },
    )

    result = as_cron("refresh_products", "--sku", "CRON-1", env_file=env_file)

    assert result.returncode == 0, result.stderr
    run = RefreshRun.objects.get()
    assert f"Started refresh run {run.pk} for 1 product." in result.stdout
    assert broker.llen("shop.refresh") == 1


def test_the_env_file_makes_a_production_process(tmp_path):
    seen = shown_settings(write_env_file(tmp_path, PRODUCTION))
    assert seen == {
        "DEBUG": False,
        "database": ["core.db.postgresql", "db.example.com", "shop"],
        "broker": PRODUCTION["CELERY_BROKER_URL"],
        "celery_broker": PRODUCTION["CELERY_BROKER_URL"],
        "supplier": PRODUCTION["SUPPLIER_API_URL"],
        "devtools": False,
    }


def test_a_real_environment_variable_wins_over_the_file(tmp_path):
    env_file = write_env_file(tmp_path, PRODUCTION)
    seen = shown_settings(env_file, CELERY_BROKER_URL="redis://other.example.com:6379/5")
    assert seen["broker"] == seen["celery_broker"] == "redis://other.example.com:6379/5"
    assert seen["database"][1] == "db.example.com"  # the rest still from the file


def test_database_url_options_reach_the_connection_beside_the_pool(tmp_path):
    """?sslmode=require in DATABASE_URL must not be dropped for the pool's options."""
    url = PRODUCTION["DATABASE_URL"] + "?sslmode=require&connect_timeout=3"
    env_file = write_env_file(tmp_path, {**PRODUCTION, "DATABASE_URL": url})
    show = (
        "import json; from django.db import connection; "
        "print(json.dumps(connection.get_connection_params(), default=str))"
    )
    result = as_cron("shell", "--no-imports", "-c", show, env_file=env_file)
    assert result.returncode == 0, result.stderr
    params = json.loads(result.stdout)
    assert params["sslmode"] == "require" and params["connect_timeout"] == 3
    assert params["host"] == "db.example.com"

    env_file = write_env_file(tmp_path, PRODUCTION)  # without: the shop's own timeout
    result = as_cron("shell", "--no-imports", "-c", show, env_file=env_file)
    assert json.loads(result.stdout)["connect_timeout"] == 10


def test_env_example_lists_every_setting_the_settings_read():
    source = (BASE_DIR / "proj" / "settings.py").read_text()
    read = set(re.findall(r'(?:env_\w+|environ\.get|required)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    example = (BASE_DIR / ".env.example").read_text()
    listed = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert {"DJANGO_DEBUG", "DATABASE_URL", "REFRESH_CHUNK_SIZE"} <= read  # the pattern works
    assert read - {"SHOP_ENV_FILE"} <= listed


# --- Safe by default: production refuses to start on development defaults ----------------


def test_env_example_as_is_refuses_to_start_until_filled_in():
    result = as_cron("check", env_file=BASE_DIR / ".env.example")
    assert result.returncode != 0
    for name in REQUIRED_IN_PRODUCTION:
        assert f"{name} is not set" in result.stderr


def test_an_empty_environment_is_production_and_refuses_to_start():
    result = as_cron("check", env_file=os.devnull)
    assert result.returncode != 0
    assert "DJANGO_DEBUG is off (production) and required settings are missing" in result.stderr
    for name in REQUIRED_IN_PRODUCTION:
        assert f"{name} is not set" in result.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED_IN_PRODUCTION))
def test_production_without_a_required_setting_names_it(tmp_path, missing):
    env_file = write_env_file(tmp_path, {k: v for k, v in PRODUCTION.items() if k != missing})
    result = as_cron("check", env_file=env_file)
    assert result.returncode != 0
    assert f"{missing} is not set" in result.stderr
    assert f"Set them in the environment or in {env_file}" in result.stderr
    for other in set(REQUIRED_IN_PRODUCTION) - {missing}:
        assert f"{other} is not set" not in result.stderr


@pytest.mark.parametrize("value", ["ten", "nan", "1,5"])
def test_a_number_setting_that_is_not_a_number_is_refused_by_name(tmp_path, value):
    env_file = write_env_file(tmp_path, {**PRODUCTION, "SUPPLIER_READ_TIMEOUT": value})
    result = as_cron("check", env_file=env_file)
    assert result.returncode != 0
    assert f"SUPPLIER_READ_TIMEOUT must be a number, got '{value}'" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("REFRESH_PROGRESS_EVERY", "0"), ("REFRESH_PROGRESS_EVERY", "-1"),
     ("SUPPLIER_READ_TIMEOUT", "0"), ("EMAIL_TIMEOUT", "-5")],
)  # fmt: skip
def test_an_interval_or_timeout_of_zero_or_less_is_refused_by_name(tmp_path, name, value):
    env_file = write_env_file(tmp_path, {**PRODUCTION, name: value})
    result = as_cron("check", env_file=env_file)
    assert result.returncode != 0
    assert f"{name} must be above 0, got '{value}'" in result.stderr


def test_a_named_env_file_that_does_not_exist_is_refused(tmp_path):
    result = as_cron("check", env_file=tmp_path / "nope.env", DJANGO_DEBUG="1")
    assert result.returncode != 0
    assert f"SHOP_ENV_FILE={tmp_path / 'nope.env'}: no such file." in result.stderr


def test_a_line_that_is_not_name_value_is_refused_without_showing_it(tmp_path):
    env_file = write_env_file(tmp_path, PRODUCTION, "DJANGO_SECRET_KEY = s3cret-value")
    result = as_cron("check", env_file=env_file)
    assert result.returncode != 0
    assert f"{env_file}, line 7: expected NAME=value" in result.stderr
    assert "s3cret" not in result.stderr


# --- HTTPS: check --deploy, redirect, HSTS, the proxy header --------------------------


def test_production_settings_pass_check_deploy_quietly(tmp_path):
    """No warning at all, and no output on stderr for cron to mail.

    The deploy checks ask the broker Redis itself: here one that persists (AOF), as a
    production broker must.
    """
    broker = PrivateRedis(tmp_path / "redis", "--appendonly", "yes")
    broker.start()
    env_file = write_env_file(tmp_path, {**PRODUCTION, "CELERY_BROKER_URL": broker.url})
    try:
        result = as_cron("check", "--deploy", "--fail-level", "WARNING", env_file=env_file)
    finally:
        broker.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
    assert result.stderr == ""


HTTPS_PROBE = """
import json
from django.test import Client
client = Client(HTTP_HOST="shop.example.com")
plain = client.get("/admin/login/")
proxied = client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location")],
    "proxied": [proxied.status_code, proxied.get("Strict-Transport-Security")],
    "secure_cookie": bool(proxied.cookies["csrftoken"]["secure"]),
}))
"""


def test_production_redirects_to_https_and_trusts_the_named_proxy_header(tmp_path):
    env_file = write_env_file(
        tmp_path, {**PRODUCTION, "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}
    )
    result = as_cron("shell", "--no-imports", "-c", HTTPS_PROBE, env_file=env_file)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "plain": [301, "https://shop.example.com/admin/login/"],
        "proxied": [200, "max-age=31536000; includeSubDomains; preload"],
        "secure_cookie": True,
    }


# --- Failed admin logins (django-axes) --------------------------------------------------

ATTACKER = "203.0.113.7"
COLLEAGUE = "198.51.100.9"


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice", password="right", is_staff=True)


def log_in(password: str, ip: str = ATTACKER, **meta: str):
    """A POST to the admin's login form, from a fresh browser at `ip`."""
    data = {"username": "alice", "password": password, "next": "/admin/"}
    return Client().post("/admin/login/", data, REMOTE_ADDR=ip, **meta)


def fail_until_locked(settings) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in("wrong").status_code == 200  # the form, with its error
    locked = log_in("wrong")
    assert locked.status_code == 429
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    assert (
        f"Too many failed logins: this username is locked out from your address for "
        f"{minutes} minutes" in locked.content.decode()
    )


def test_failed_logins_lock_out_that_username_from_that_address(alice, settings):
    fail_until_locked(settings)

    assert log_in("right").status_code == 429  # even the right password, while locked out
    # Without proxies (SHOP_PROXY_COUNT=0) a forged X-Forwarded-For changes nothing.
    assert log_in("right", HTTP_X_FORWARDED_FOR=COLLEAGUE).status_code == 429
    assert log_in("right", ip=COLLEAGUE).status_code == 302  # alice elsewhere: unaffected


def test_a_successful_login_resets_the_count(alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in("wrong").status_code == 200
    assert log_in("right").status_code == 302
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in("wrong").status_code == 200
    assert log_in("right").status_code == 302


def test_the_lockout_lifts_after_the_cool_off(alice, settings):
    fail_until_locked(settings)
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME)

    assert log_in("right").status_code == 302


def test_behind_a_proxy_a_forged_forwarded_for_does_not_dodge_the_lockout(alice, settings):
    """With one proxy, the client is the address it appended (the last), whatever came
    before it: an attacker varying the rest of X-Forwarded-For is still one address."""
    settings.SHOP_PROXY_COUNT = 1
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        forged = {"HTTP_X_FORWARDED_FOR": f"10.0.0.{n}, {ATTACKER}"}
        assert log_in("wrong", ip="127.0.0.1", **forged).status_code == 200
    forged = {"HTTP_X_FORWARDED_FOR": f"10.9.9.9, {ATTACKER}"}
    assert log_in("wrong", ip="127.0.0.1", **forged).status_code == 429

    assert AccessAttempt.objects.get().ip_address == ATTACKER
    via_proxy = {"HTTP_X_FORWARDED_FOR": COLLEAGUE}
    assert log_in("right", ip="127.0.0.1", **via_proxy).status_code == 302


# --- Serialization --------------------------------------------------------------------


@pytest.mark.workers
def test_worker_refuses_a_pickled_message(app, workers, settings):
    """A pickle message is discarded unrun; a JSON one right behind it runs."""
    from django_celery_results.models import TaskResult

    pickled_id, json_id = str(uuid.uuid4()), str(uuid.uuid4())
    with Connection(settings.CELERY_BROKER_URL) as conn:
        app.send_task("core.tasks.ping", task_id=pickled_id, serializer="pickle", connection=conn)
    result = app.send_task("core.tasks.ping", task_id=json_id)

    assert result.get(timeout=30) == "pong"
    wait_for(lambda: TaskResult.objects.filter(task_id=json_id).exists())
    assert not TaskResult.objects.filter(task_id=pickled_id).exists()
    log = (workers.log_dir / "callbacks.log").read_text()
    assert "Refusing to deserialize untrusted content of type pickle" in log
