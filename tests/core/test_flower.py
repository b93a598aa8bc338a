"""Flower runs with our app, behind basic auth, and sees the real workers and their tasks."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from proj import topology
from tests.support.settings_env import manage
from tests.support.waiting import wait_for
from tests.support.workers import BASE_DIR, WorkerFleet

AUTH = ("ops", "s3cret-flower")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def flower(workers: WorkerFleet) -> Iterator[str]:
    port = free_port()
    env = {**workers.env, "FLOWER_BASIC_AUTH": ":".join(AUTH)}
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "flower", "--port", str(port)],
        cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            return requests.get(url + "/healthcheck", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(answers, timeout=30, what="Flower")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.workers
def test_flower_requires_auth_and_sees_workers_and_tasks(app, flower, workers):
    assert requests.get(flower + "/api/workers", timeout=10).status_code == 401
    wrong = requests.get(flower + "/api/workers", auth=("ops", "nope"), timeout=10)
    assert wrong.status_code == 401

    def workers_seen() -> dict | None:
        reply = requests.get(flower + "/api/workers?refresh=1", auth=AUTH, timeout=10)
        assert reply.status_code == 200
        seen = reply.json()
        return seen if {workers.node(p) for p in topology.POOLS} <= set(seen) else None

    seen = wait_for(workers_seen, timeout=30, what="Flower to list every node")
    refresh = seen["refresh@pytest"]
    assert [q["name"] for q in refresh["active_queues"]] == ["shop.refresh"]

    result = app.send_task("core.tasks.ping")
    assert result.get(timeout=30) == "pong"

    def task_seen() -> dict | None:
        reply = requests.get(flower + f"/api/task/info/{result.id}", auth=AUTH, timeout=10)
        return reply.json() if reply.status_code == 200 else None

    info = wait_for(task_seen, timeout=30, what="Flower to see the task")
    assert info["name"] == "core.tasks.ping"
    assert info["state"] == "SUCCESS"
    assert info["worker"] == "callbacks@pytest"


def test_flower_refuses_to_start_without_auth():
    result = manage("flower", "--port", str(free_port()), FLOWER_BASIC_AUTH="")
    assert result.returncode != 0
    assert "Flower refuses to start without authentication" in result.stderr
    assert "FLOWER_BASIC_AUTH=user:password" in result.stderr


def test_flower_rejects_malformed_auth():
    result = manage("flower", "--port", str(free_port()), FLOWER_BASIC_AUTH="justaname")
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH must be user:password" in result.stderr


def test_insecure_local_dev_is_refused_in_production():
    result = manage(
        "flower", "--insecure-local-dev", FLOWER_BASIC_AUTH="", DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="x" * 50, DJANGO_ALLOWED_HOSTS="shop.example.com",
    )  # fmt: skip
    assert result.returncode != 0
    assert "--insecure-local-dev is refused when DEBUG is off" in result.stderr
