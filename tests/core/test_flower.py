"""Flower runs with our app behind basic auth on every page, read-only unless allowed,
sees the real workers and their tasks, and lists every declared queue."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from core.fleet import BASE_DIR, WorkerFleet
from core.waiting import wait_for
from proj import topology
from shop.models import Product, RefreshRun
from shop.workflows import refresh_run_request
from tests.support.settings_env import manage

pytestmark = pytest.mark.database_agnostic

AUTH = ("ops", "s3cret-flower")
READ_ONLY = "Flower is read-only"
PREFORK = next(p for p in topology.POOLS if p.pool == "prefork")
CALLBACKS = next(p for p in topology.POOLS if topology.DEFAULT_QUEUE in p.queues)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def start_flower(workers: WorkerFleet, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start `manage.py flower` as an operator would; returns its URL. Stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**extra_env: str) -> str:
        port = free_port()
        env = {**workers.env, "FLOWER_BASIC_AUTH": ":".join(AUTH), "FLOWER_ALLOW_CONTROL": ""}
        env.pop("FLOWER_READ_ONLY", None)
        env.update(extra_env)
        log = tmp_path / f"flower-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "flower", "--port", str(port)],
                cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return requests.get(url + "/healthcheck", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(answers, timeout=30, what="Flower")
        return url

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def flower(start_flower: Callable[..., str]) -> str:
    return start_flower()


def flower_knows(flower: str, nodes: set[str]) -> dict:
    """Wait until Flower lists `nodes` (control calls need Flower to know the worker)."""

    def seen() -> dict | None:
        reply = requests.get(flower + "/api/workers?refresh=1", auth=AUTH, timeout=10)
        assert reply.status_code == 200
        workers = reply.json()
        return workers if nodes <= set(workers) else None

    return wait_for(seen, timeout=30, what=f"Flower to list {sorted(nodes)}")


def pool_processes(app, node: str) -> int:
    stats = app.control.inspect(destination=[node], timeout=5).stats()
    return len(stats[node]["pool"]["processes"])


@pytest.mark.workers
def test_flower_requires_auth_and_sees_workers_and_tasks(app, flower, workers):
    assert requests.get(flower + "/api/workers", timeout=10).status_code == 401
    wrong = requests.get(flower + "/api/workers", auth=("ops", "nope"), timeout=10)
    assert wrong.status_code == 401

    seen = flower_knows(flower, {n for p in topology.POOLS for n in workers.nodes(p)})
    for node in workers.nodes("refresh"):  # every process of the pool, each on its queue
        assert [q["name"] for q in seen[node]["active_queues"]] == ["shop.refresh"]

    result = app.send_task("core.tasks.ping")
    assert result.get(timeout=30) == "pong"

    def task_seen() -> dict | None:
        reply = requests.get(flower + f"/api/task/info/{result.id}", auth=AUTH, timeout=10)
        return reply.json() if reply.status_code == 200 else None

    info = wait_for(task_seen, timeout=30, what="Flower to see the task")
    assert info["name"] == "core.tasks.ping"
    assert info["state"] == "SUCCESS"
    assert info["worker"] == workers.node(CALLBACKS)


@pytest.mark.workers
def test_metrics_need_the_same_credentials(flower, workers):
    for auth in (None, ("ops", "nope"), ("intruder", AUTH[1])):
        refused = requests.get(flower + "/metrics", auth=auth, timeout=10)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="flower"'
        assert "flower_" not in refused.text

    online = f'flower_worker_online{{worker="{workers.node(CALLBACKS)}"}} 1.0'

    def scraped() -> str | None:
        reply = requests.get(flower + "/metrics", auth=AUTH, timeout=10)
        assert reply.status_code == 200
        return reply.text if online in reply.text else None

    metrics = wait_for(scraped, timeout=30, what="the worker in Flower's metrics")
    assert "flower_events_total" in metrics


# Every control endpoint of Flower 2.2 (the UI's buttons post to these same URLs), plus
# the task-running ones, which read-only mode refuses too.
CONTROL_CALLS = [
    ("/api/task/revoke/{task_id}?terminate=true", {}),
    ("/api/task/abort/{task_id}", {}),
    ("/api/worker/shutdown/{node}", {}),
    ("/api/worker/pool/restart/{node}", {}),
    ("/api/worker/pool/grow/{node}?n=2", {}),
    ("/api/worker/pool/shrink/{node}?n=1", {}),
    ("/api/worker/pool/autoscale/{node}?min=1&max=8", {}),
    ("/api/worker/queue/add-consumer/{node}?queue=shop.refresh", {}),
    ("/api/worker/queue/cancel-consumer/{node}?queue={queue}", {}),
    ("/api/task/rate-limit/core.tasks.ping", {"ratelimit": "1/h", "workername": "{node}"}),
    ("/api/task/timeout/core.tasks.ping", {"soft": "1", "hard": "2", "workername": "{node}"}),
    ("/api/task/apply/core.tasks.ping", {}),
    ("/api/task/async-apply/core.tasks.ping", {}),
    ("/api/task/send-task/core.tasks.ping", {}),
]


@pytest.mark.workers
def test_flower_is_read_only_by_default(app, flower, workers):
    node = workers.node(PREFORK)
    flower_knows(flower, {node})  # refusals must not be "unknown worker" 404s
    task_id = str(uuid.uuid4())
    fields = {"node": node, "task_id": task_id, "queue": PREFORK.queues[0]}

    for path, form in CONTROL_CALLS:
        url = flower + path.format(**fields)
        data = {k: v.format(**fields) for k, v in form.items()}
        # Without credentials the answer is still 401: nothing is revealed before auth.
        assert requests.post(url, data=data, timeout=10).status_code == 401, path
        refused = requests.post(url, data=data, auth=AUTH, timeout=10)
        assert refused.status_code == 403, (path, refused.text)
        assert refused.text.startswith(READ_ONLY), (path, refused.text)
        assert "FLOWER_ALLOW_CONTROL=1" in refused.text
    # The UI posts from its own page; same refusal.
    ui_post = requests.post(
        flower + f"/api/worker/shutdown/{node}", auth=AUTH, timeout=10,
        headers={"Origin": flower, "Sec-Fetch-Site": "same-origin",
                 "X-Requested-With": "XMLHttpRequest"},
    )  # fmt: skip
    assert ui_post.status_code == 403 and ui_post.text.startswith(READ_ONLY)

    # The UI does not offer the controls either.
    page = requests.get(flower + f"/worker/{node}", auth=AUTH, timeout=10)
    assert page.status_code == 200 and node in page.text
    assert "Pool controls" not in page.text and "Shut Down" not in page.text

    # And the worker is untouched: still up, same pool, same queue, the task not revoked.
    assert app.control.ping(destination=[node], timeout=2) == [{node: {"ok": "pong"}}]
    assert pool_processes(app, node) == PREFORK.concurrency
    queues = app.control.inspect(destination=[node], timeout=5).active_queues()[node]
    assert [q["name"] for q in queues] == list(PREFORK.queues)
    ping = app.send_task("core.tasks.ping", task_id=task_id)
    assert ping.get(timeout=30) == "pong"

    # Reading still works, the tasks table's POST included.
    table = requests.post(
        flower + "/tasks/datatable", auth=AUTH, timeout=10,
        data={"draw": "1", "start": "0", "length": "10", "search[value]": "",
              "order[0][column]": "0", "order[0][dir]": "asc", "columns[0][data]": "name"},
    )  # fmt: skip
    assert table.status_code == 200, table.text
    assert "recordsTotal" in table.json()


@pytest.mark.workers
def test_flower_allow_control_lets_operators_resize_a_pool(app, start_flower, workers):
    flower = start_flower(FLOWER_ALLOW_CONTROL="1")
    node = workers.node(PREFORK)
    flower_knows(flower, {node})
    page = requests.get(flower + f"/worker/{node}", auth=AUTH, timeout=10)
    assert "Pool controls" in page.text

    grow = flower + f"/api/worker/pool/grow/{node}?n=1"
    assert requests.post(grow, timeout=10).status_code == 401
    shrink_sent = False
    try:
        grown = requests.post(grow, auth=AUTH, timeout=10)
        assert grown.status_code == 200, grown.text
        assert grown.json() == {"message": f"Growing '{node}' worker's pool by 1"}
        wait_for(
            lambda: pool_processes(app, node) == PREFORK.concurrency + 1,
            timeout=30, what="the pool to grow",
        )  # fmt: skip
        shrunk = requests.post(
            flower + f"/api/worker/pool/shrink/{node}?n=1", auth=AUTH, timeout=10
        )
        assert shrunk.status_code == 200, shrunk.text
        shrink_sent = True
    finally:
        # Leave the session's fleet as it was, whatever happened above. Not a second shrink
        # after Flower's: the node may not have applied it yet, and two would leave the
        # pool one process short for the rest of the session.
        if not shrink_sent and pool_processes(app, node) > PREFORK.concurrency:
            app.control.pool_shrink(n=1, destination=[node], reply=True, timeout=5)
    wait_for(
        lambda: pool_processes(app, node) == PREFORK.concurrency,
        timeout=30, what="the pool to shrink back",
    )  # fmt: skip


@pytest.mark.workers
def test_broker_tab_lists_every_declared_queue(app, flower, workers):
    """Even a queue no running node consumes: that is when its backlog matters."""
    node = workers.node(PREFORK)
    queue = PREFORK.queues[0]
    app.control.cancel_consumer(queue, destination=[node], reply=True, timeout=5)
    try:
        waiting = app.send_task("core.tasks.ping", queue=queue)

        def forgotten() -> bool:
            seen = flower_knows(flower, {node})
            return queue not in {q["name"] for q in seen[node]["active_queues"]}

        wait_for(forgotten, timeout=30, what=f"Flower to see {node} stop consuming {queue}")

        page = requests.get(flower + "/broker", auth=AUTH, timeout=10)
        assert page.status_code == 200
        rows = dict(re.findall(r"<td>([\w.]+)</td>\s*<td[^>]*>\s*(\d+)\s*</td>", page.text))
        assert set(rows) == {q.name for q in topology.QUEUES}, rows
        assert rows[queue] == "1"

        lengths = requests.get(flower + "/api/queues/length", auth=AUTH, timeout=10).json()
        by_name = {q["name"]: q["messages"] for q in lengths["active_queues"]}
        assert set(by_name) == {q.name for q in topology.QUEUES}
        assert by_name[queue] == 1
    finally:
        app.control.add_consumer(queue, destination=[node], reply=True, timeout=5)
    assert waiting.get(timeout=30) == "pong"  # the node drains it once it consumes again


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


@pytest.mark.workers
def test_flower_shows_a_refresh_chunk_by_its_run_and_id_range(app, flower, workers, supplier):
    flower_knows(flower, set(workers.nodes("refresh")))  # its event receiver is listening
    Product.objects.bulk_create(Product(sku=f"FLOWER-{i}", name="x") for i in range(3))
    ids = sorted(Product.objects.values_list("pk", flat=True))
    run, _ = refresh_run_request(product_ids=ids, trigger=RefreshRun.Trigger.COMMAND)

    def chunk_seen() -> dict | None:
        reply = requests.get(
            flower + "/api/tasks",
            params={"taskname": "shop.tasks.product_refresh_chunk"},
            auth=AUTH,
            timeout=10,
        )
        assert reply.status_code == 200
        tasks = [t for t in reply.json().values() if f"'run_id': {run.pk}," in t["kwargs"]]
        return tasks[0] if tasks else None

    task = wait_for(chunk_seen, timeout=30, what="Flower to see the run's chunk")
    # Not the ids one by one (Celery's repr of the list, cut at 1,024 characters).
    assert task["kwargs"] == f"{{'run_id': {run.pk}, 'product_ids': <3 ids, {ids[0]}..{ids[-1]}>}}"
