"""`manage.py workers` drives real `celery multi` nodes with the topology's queues and pools."""

from __future__ import annotations

import socket

import pytest
from django.core.management import call_command

from core.management.commands.workers import node_pid
from proj import topology
from tests.support.settings_env import manage
from tests.support.waiting import wait_for


def test_show_prints_the_celery_multi_command(capsys):
    call_command("workers", "show")
    out = capsys.readouterr().out.strip()
    assert " multi start " in out and "-O fair" in out
    for pool in topology.POOLS:
        assert f"-Q:{pool.name} {','.join(pool.queues)}" in out
        assert f"-P:{pool.name} {pool.pool}" in out
        assert f"-c:{pool.name} {pool.concurrency}" in out
    assert "-P:refresh gevent" in out


def test_procfile_matches_the_topology():
    """Edit proj/topology.py, then `python manage.py workers procfile > Procfile`."""
    from tests.support.workers import BASE_DIR

    assert (BASE_DIR / "Procfile").read_text() == topology.procfile_text()
    lines = (BASE_DIR / "Procfile").read_text().splitlines()
    workers = [line for line in lines if line.startswith("worker_")]
    assert len(workers) == len(topology.POOLS)
    assert "release: python manage.py migrate --noinput" in lines


@pytest.mark.workers
def test_start_status_stop_real_nodes(app, worker_fleet, tmp_path, transactional_db):
    pools = topology.POOLS[:2]  # refresh (gevent) and callbacks: enough to prove the wiring
    names = [arg for p in pools for arg in ("--pool", p.name)]
    var = ["--var-dir", str(tmp_path)]
    try:
        started = manage("workers", "start", *names, *var, env=worker_fleet.env)
        assert started.returncode == 0, started.stderr + started.stdout
        for pool in pools:
            assert f"{pool.name}: running (pid" in started.stdout
            assert node_pid(tmp_path, pool)

        nodes = [f"{p.name}@{socket.gethostname()}" for p in pools]
        wait_for(
            lambda: len(app.control.ping(destination=nodes, timeout=0.5)) == len(nodes),
            timeout=30, what=f"{nodes} to answer",
        )  # fmt: skip
        inspect = app.control.inspect(destination=nodes, timeout=5)
        queues = inspect.active_queues()
        stats = inspect.stats()
        for pool, node in zip(pools, nodes, strict=True):
            assert sorted(q["name"] for q in queues[node]) == sorted(pool.queues)
            assert "gevent" in stats[node]["pool"]["implementation"]
            assert stats[node]["pool"]["max-concurrency"] == pool.concurrency
    finally:
        stopped = manage("workers", "stop", *names, *var, env=worker_fleet.env)
    assert stopped.returncode == 0, stopped.stderr
    assert "warm shutdown, waiting for running tasks to finish" in stopped.stdout
    status = manage("workers", "status", *names, *var, env=worker_fleet.env)
    assert status.returncode == 3
    for pool in pools:
        assert f"{pool.name}: not running" in status.stdout
        assert node_pid(tmp_path, pool) is None
