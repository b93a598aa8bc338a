"""core.concurrency on a patched process (a refresh worker) and unpatched."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings

from core.concurrency import map_in_batches, process_gate, readable_now

GEVENT_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import json, time
from core.concurrency import map_in_batches, readable_now
in_flight = peak = 0
def call(x):
    global in_flight, peak
    in_flight += 1; peak = max(peak, in_flight)
    time.sleep(0.01 * (x % 3))  # patched: yields to the other greenlets
    in_flight -= 1
    if x == 13:
        raise ValueError("thirteen")
    return x * 10
ok = sorted(pair for batch in map_in_batches(call, range(12), limit=4) for pair in batch)
try:
    list(map_in_batches(call, range(20), limit=5))
    error = None
except ValueError as exc:
    error = str(exc)
print(json.dumps({"ok": ok, "peak": peak, "error": error}))
"""


def run_patched(script: str) -> dict[str, Any]:
    """Run `script` in a fresh, monkey-patched interpreter; what it printed, as JSON."""
    answer = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60, cwd=settings.BASE_DIR, check=True,
    )  # fmt: skip
    return json.loads(answer.stdout)


def test_on_gevent_each_result_keeps_its_index_limit_holds_and_an_error_is_raised():
    got = run_patched(GEVENT_SCRIPT)
    assert got["ok"] == [[x, x * 10] for x in range(12)]
    assert got["peak"] == 5  # the second call's limit; the first's was 4
    assert got["error"] == "thirteen"


def test_unpatched_gevent_native_calls_overlap_and_an_error_is_raised():
    """A test or a management command: no monkey patching, and the supplier client's I/O is
    gevent's own, so its calls still overlap (here gevent.sleep stands in for that I/O)."""
    import gevent

    state = {"now": 0, "peak": 0}

    def call(x: int) -> int:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        gevent.sleep(0.01)
        state["now"] -= 1
        return -x

    pairs = [pair for batch in map_in_batches(call, range(9), limit=3) for pair in batch]
    assert sorted(pairs) == [(x, -x) for x in range(9)]
    assert state["peak"] == 3
    with pytest.raises(ZeroDivisionError):
        list(map_in_batches(lambda x: 1 // (x - 4), range(9), limit=3))


def test_batches_hand_back_the_quick_results_while_a_slow_call_is_still_out():
    import gevent

    def call(x: int) -> int:
        gevent.sleep(0.8 if x == 4 else 0.01)
        return -x

    batches = list(map_in_batches(call, range(6), limit=6, every=0.2))
    everything = list(map_in_batches(call, range(6), limit=6))
    one_at_a_time = list(map_in_batches(call, [0, 4], limit=1, every=0.2))

    assert [sorted(batch) for batch in batches] == [
        [(0, 0), (1, -1), (2, -2), (3, -3), (5, -5)],
        [(4, -4)],
    ]
    assert len(everything) == 1 and sorted(everything[0]) == [(x, -x) for x in range(6)]
    assert one_at_a_time == [[(0, 0)], [(1, -4)]]


def test_closing_the_batches_early_stops_the_calls_still_out():
    """A chunk whose write fails stops its fetches instead of leaving them running."""
    from contextlib import closing

    import gevent

    started = []

    def call(x: int) -> int:
        started.append(x)
        gevent.sleep(0.01 if x == 0 else 0.3)
        return x

    batches = map_in_batches(call, range(4), limit=2, every=0.1)
    with closing(batches):
        first = next(batches)
    gevent.sleep(0.6)  # left running, a freed greenlet would have started item 3 by now

    assert first == [(0, 0)]
    assert started == [0, 1, 2]


GATE_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import json, time
import gevent
from core.concurrency import map_in_batches, process_gate
inside = peak = ticks = 0
order = []
def write(x):
    global inside, peak
    with process_gate("test-writes"):
        inside += 1; peak = max(peak, inside)
        order.append(x)
        time.sleep(0.02)  # a round trip: patched, other greenlets run meanwhile
        inside -= 1
def ticker():
    global ticks
    for _ in range(10):
        time.sleep(0.005); ticks += 1
clock = gevent.spawn(ticker)
list(map_in_batches(write, range(6), limit=6))
clock.join()
print(json.dumps({"peak": peak, "order": order, "ticks": ticks,
                  "same": process_gate("test-writes") is process_gate("test-writes")}))
"""


def test_a_process_gate_lets_one_in_at_a_time_in_turn_and_other_greenlets_run_meanwhile():
    got = run_patched(GATE_SCRIPT)
    assert got["peak"] == 1
    assert got["order"] == list(range(6))  # first come, first served
    assert got["ticks"] == 10  # the process was not blocked while a greenlet held the gate
    assert got["same"]


def test_unpatched_a_process_gate_is_a_thread_semaphore_shared_by_name():
    import threading

    inside, peak, count = [0], [0], threading.Lock()

    def write() -> None:
        with process_gate("test-threads", size=2):
            with count:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            threading.Event().wait(0.02)
            with count:
                inside[0] -= 1

    threads = [threading.Thread(target=write) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 2
    assert process_gate("test-threads") is process_gate("test-threads", size=5)


def test_readable_now_tells_data_and_a_closed_peer_even_above_fd_1024():
    """The liveness check of pooled connections and the green loop's drain rely on it; a
    node with hundreds of HTTP connections has descriptors where select() cannot go."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"cannot open descriptors above 1024 here (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    ours, peer = socket.socketpair()
    high = socket.socket(fileno=os.dup2(ours.fileno(), 1500))
    ours.close()
    try:
        assert not readable_now(high)
        peer.sendall(b"x")
        assert readable_now(high)
        assert high.recv(1) == b"x"
        peer.close()
        assert readable_now(high)  # EOF: the server closed a kept-alive connection
    finally:
        high.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
