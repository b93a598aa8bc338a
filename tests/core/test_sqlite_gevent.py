"""A gevent node on SQLite keeps serving while another process holds the write lock."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from django.contrib.auth.models import Group
from django.db import connection

from core.waiting import wait_for

pytestmark = pytest.mark.workers


def test_a_writer_waiting_for_the_lock_does_not_freeze_its_node(app, workers, tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write lock")
    name = f"waits-{uuid.uuid4().hex[:8]}"
    blocker = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process is writing, for a long time
    try:
        app.send_task("devtools.tasks.write_group", args=[name])  # the callbacks node
        served = tmp_path / "served"
        app.send_task("devtools.tasks.touch", args=[str(served)])  # the same node, meanwhile
        wait_for(served.exists, timeout=10, what="the node to serve while its writer waits")
        assert not Group.objects.filter(name=name).exists()  # still waiting, not failed
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    wait_for(lambda: Group.objects.filter(name=name).exists(), what="the write after the lock")
