"""`manage.py workers` drives real `celery multi` nodes with the topology's queues and pools,
and shows operators which nodes run (however they were started) and what they logged."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid

import pytest
from django.core.management import call_command

from core.fleet import BASE_DIR, WorkerFleet
from core.management.commands.workers import node_pid
from core.waiting import wait_for
from proj import topology
from tests.support.settings_env import manage

pytestmark = pytest.mark.database_agnostic

GEVENT = tuple(p for p in topology.POOLS if p.pool == "gevent")
PREFORK = tuple(p for p in topology.POOLS if p.pool == "prefork")
# What `workers start` runs in the test below: a gevent pool of several nodes (refresh),
# the one holding the default queue (callbacks) and a prefork pool. Not every pool: the
# topology grew to eleven, and starting all of them made this the slowest test of the
# suite without testing anything the three do not (each pool's own arguments are checked
# through `workers show` and the system checks).
MULTI_POOLS = (
    *(p for p in GEVENT if p.name in ("refresh", "callbacks")),
    PREFORK[0],
)
# A pool the test of Procfile-started nodes runs, so the two never share a node name.
PROCFILE_POOL = PREFORK[-1]


def pool_args(*pools: topology.Pool) -> list[str]:
    return [arg for p in pools for arg in ("--pool", p.name)]


def test_show_prints_the_celery_multi_command(capsys):
    call_command("workers", "show")
    out = capsys.readouterr().out.strip()
    assert " multi start " in out and "-O fair" in out
    for pool in topology.POOLS:
        for node in pool.nodes:
            assert f"-Q:{node} {','.join(pool.queues)}" in out
            assert f"-P:{node} {pool.pool}" in out
            assert f"-c:{node} {pool.concurrency}" in out
    # An I/O pool runs one node per CPU: one gevent process uses one core.
    refresh = next(p for p in topology.POOLS if p.name == "refresh")
    assert refresh.processes == topology.cpu_count()
    assert all(f"-P:{node} gevent" in out for node in refresh.nodes)


def test_procfile_matches_the_topology():
    """Edit proj/topology.py, then `python manage.py workers procfile > Procfile`."""
    from core.fleet import BASE_DIR

    assert (BASE_DIR / "Procfile").read_text() == topology.procfile_text()
    lines = (BASE_DIR / "Procfile").read_text().splitlines()
    workers = [line for line in lines if line.startswith("worker_")]
    assert len(workers) == len(topology.POOLS)
    assert (
        "release: python manage.py migrate --noinput && python manage.py collectstatic --noinput"
        in lines
    )


@pytest.mark.workers
def test_start_status_logs_stop_real_nodes(app, worker_fleet, tmp_path, transactional_db):
    names = pool_args(*MULTI_POOLS)
    var = ["--var-dir", str(tmp_path)]
    env = worker_fleet.env
    pairs = [(p, node) for p in MULTI_POOLS for node in p.nodes]
    nodes = [f"{node}@{socket.gethostname()}" for _, node in pairs]
    try:
        started = manage("workers", "start", *names, *var, env=env)
        assert started.returncode == 0, started.stderr + started.stdout
        for _, node in pairs:
            assert f"{node}: running (pid {node_pid(tmp_path, node)}, celery multi)" in (
                started.stdout
            )

        wait_for(
            lambda: len(app.control.ping(destination=nodes, timeout=0.5)) == len(nodes),
            timeout=30, what=f"{nodes} to answer",
        )  # fmt: skip
        inspect = app.control.inspect(destination=nodes, timeout=5)
        queues = inspect.active_queues()
        stats = inspect.stats()
        for (pool, _), node in zip(pairs, nodes, strict=True):  # every node of every pool
            assert sorted(q["name"] for q in queues[node]) == sorted(pool.queues)
            assert pool.pool in stats[node]["pool"]["implementation"]
            assert stats[node]["pool"]["max-concurrency"] == pool.concurrency

        # Each node writes its log where `workers status` says: banner, then ready line.
        status = manage("workers", "status", *names, *var, env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        for (pool, name), node in zip(pairs, nodes, strict=True):
            log = tmp_path / "log" / f"{name}.log"
            assert f"{name}: running (pid" in status.stdout
            assert f"; log {log}" in status.stdout
            wait_for(lambda log=log, node=node: f"{node} ready." in log.read_text(),
                     timeout=30, what=f"{node}'s ready line in {log}")  # fmt: skip
            text = log.read_text()
            assert f"{node} starting" in text and "[queues]" in text
            for queue in pool.queues:
                assert f".> {queue} " in text
            assert f"concurrency: {pool.concurrency} ({pool.pool})" in text

        # What a node logs later lands there too (here: a revoke it is told about).
        callbacks = next(p for p in MULTI_POOLS if topology.DEFAULT_QUEUE in p.queues)
        callbacks_log = tmp_path / "log" / f"{callbacks.name}.log"
        task_id = str(uuid.uuid4())
        app.control.revoke(task_id, destination=[f"{callbacks.name}@{socket.gethostname()}"])
        wait_for(lambda: f"Tasks flagged as revoked: {task_id}" in callbacks_log.read_text(),
                 timeout=10, what="the revoke in the callbacks log")  # fmt: skip

        # `workers logs` shows the last lines of each node's files, pool processes included.
        logs = manage("workers", "logs", *names, "-n", "200", *var, env=env)
        assert logs.returncode == 0, logs.stderr
        for (_, name), node in zip(pairs, nodes, strict=True):
            assert f"==> {tmp_path / 'log' / f'{name}.log'} <==" in logs.stdout
            assert f"{node} ready." in logs.stdout
        for index in range(1, PREFORK[0].concurrency + 1):
            child = tmp_path / "log" / f"{PREFORK[0].name}-{index}.log"
            assert f"==> {child} <==" in logs.stdout
        last = manage("workers", "logs", "--pool", callbacks.name, "-n", "2", *var, env=env)
        assert last.stdout.splitlines() == [
            f"==> {callbacks_log} <==",
            *callbacks_log.read_text().splitlines()[-2:],
        ]
    finally:
        stopped = manage("workers", "stop", *names, *var, env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert "warm shutdown, waiting for running tasks to finish" in stopped.stdout
    status = manage("workers", "status", *names, *var, env=env)
    assert status.returncode == 3
    for _, node in pairs:
        assert f"{node}: not running" in status.stdout
        assert node_pid(tmp_path, node) is None


@pytest.mark.workers
def test_status_sees_nodes_the_procfile_started(app, worker_fleet, tmp_path, transactional_db):
    """No pid file: a foreground `celery worker -n <pool>@%h`, as the Procfile runs it."""
    host = socket.gethostname()
    other = next(p for p in topology.POOLS if p is not PROCFILE_POOL)
    var = ["--var-dir", str(tmp_path)]
    fleet = WorkerFleet(app, worker_fleet.env, tmp_path / "procfile", hostname=host)
    fleet.start((PROCFILE_POOL,))
    try:
        status = manage("workers", "status", *pool_args(PROCFILE_POOL), *var, env=fleet.env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert (
            f"{PROCFILE_POOL.name}: running (answers ping as {PROCFILE_POOL.name}@{host}; "
            "not started by celery multi"
        ) in status.stdout

        both = manage("workers", "status", *pool_args(PROCFILE_POOL, other), *var, env=fleet.env)
        assert both.returncode == 3  # `other` is really down
        assert f"{PROCFILE_POOL.name}: running (answers ping" in both.stdout
        assert f"{other.name}: not running, no answer to ping from {other.name}@{host}" in (
            both.stdout
        )
    finally:
        fleet.stop()
    after = manage("workers", "status", *pool_args(PROCFILE_POOL), *var, env=fleet.env)
    assert after.returncode == 3
    assert f"{PROCFILE_POOL.name}: not running" in after.stdout


def test_status_names_a_stale_pid_file_and_an_unreachable_broker(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "run").mkdir()
    pool = topology.POOLS[0]
    (tmp_path / "run" / f"{pool.name}.pid").write_text(f"{gone.pid}\n")
    var = ["--var-dir", str(tmp_path)]

    stale = manage("workers", "status", *pool_args(pool), *var)
    assert stale.returncode == 3
    assert f"{pool.name}: not running (stale pid file)" in stale.stdout

    # Without a broker, a node without a pid file may or may not run: LSB "unknown" (4).
    blind = manage(
        "workers", "status", *pool_args(pool), *var, CELERY_BROKER_URL="redis://127.0.0.1:1/0"
    )
    assert blind.returncode == 4, blind.stdout + blind.stderr
    assert "The broker does not answer" in blind.stdout
    assert f"{pool.name}: unknown" in blind.stdout


def test_logs_tails_each_file_of_a_node(tmp_path):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    pool, prefork = next(p for p in GEVENT if len(p.nodes) == 1), PREFORK[0]
    (log_dir / f"{pool.name}.log").write_text("".join(f"line {i}\n" for i in range(50_000)))
    for suffix in ("", "-2", "-1", "-10"):
        (log_dir / f"{prefork.name}{suffix}.log").write_text(f"{prefork.name}{suffix}\n")
    var = ["--var-dir", str(tmp_path)]

    shown = manage("workers", "logs", *pool_args(pool, prefork), "-n", "3", *var)
    assert shown.returncode == 0, shown.stderr
    expected = [f"==> {log_dir / f'{pool.name}.log'} <==", "line 49997", "line 49998", "line 49999"]
    for suffix in ("", "-1", "-2", "-10"):  # the node's own file, then its pool processes
        expected += [
            f"==> {log_dir / f'{prefork.name}{suffix}.log'} <==",
            f"{prefork.name}{suffix}",
        ]
    assert shown.stdout.splitlines() == expected

    refresh = next(p for p in GEVENT if p.name == "refresh")
    nothing = manage("workers", "logs", *pool_args(refresh), *var)
    assert nothing.returncode != 0
    for node in refresh.nodes:  # one file per node of the pool
        assert f"{node}: no log file at {log_dir / f'{node}.log'}" in nothing.stdout
    assert "No node log file under" in nothing.stderr


@pytest.mark.workers
def test_the_procfile_line_runs_every_node_of_a_pool_and_stops_them(
    app, worker_fleet, transactional_db
):
    """`workers run refresh`: one node per CPU in the foreground, each on the queue."""
    refresh = next(p for p in topology.POOLS if p.name == "refresh")
    host = socket.gethostname()
    nodes = [f"{node}@{host}" for node in refresh.nodes]
    runner = subprocess.Popen(
        [sys.executable, "manage.py", "workers", "run", "refresh"],
        cwd=BASE_DIR, env=worker_fleet.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(
            lambda: len(app.control.ping(destination=nodes, timeout=0.5)) == len(nodes),
            timeout=60, what=f"{nodes} to answer",
        )  # fmt: skip
        queues = app.control.inspect(destination=nodes, timeout=5).active_queues()
        assert sorted(queues) == sorted(nodes) and len(nodes) == refresh.processes
        assert all([q["name"] for q in queues[n]] == ["shop.refresh"] for n in nodes)
    finally:
        runner.terminate()  # what honcho or systemd sends: passed on to every node
        code = runner.wait(timeout=90)
    assert code == 0
    assert app.control.ping(destination=nodes, timeout=1) == []
