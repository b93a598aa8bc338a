"""Production safety and serialization, seen from the outside."""

from __future__ import annotations

import os
import uuid

import pytest
from kombu import Connection

from core.models import ChordPart  # noqa: F401  (the app loads)
from tests.support.settings_env import manage as manage_in
from tests.support.waiting import wait_for


def manage(*args: str, **env: str):
    """manage.py with the production settings module and none of our DJANGO_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return manage_in(*args, env={**clean, "DJANGO_SETTINGS_MODULE": "proj.settings", **env})


def test_production_without_secret_key_is_a_clear_error():
    result = manage("check", DJANGO_DEBUG="0", DJANGO_ALLOWED_HOSTS="shop.example.com")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set and DJANGO_DEBUG is off" in result.stderr


def test_production_without_allowed_hosts_is_a_clear_error():
    result = manage("check", DJANGO_DEBUG="0", DJANGO_SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS is not set and DJANGO_DEBUG is off" in result.stderr


def test_production_with_both_set_starts():
    result = manage(
        "check", DJANGO_DEBUG="0", DJANGO_SECRET_KEY="x" * 50,
        DJANGO_ALLOWED_HOSTS="shop.example.com",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


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
