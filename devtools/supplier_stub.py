"""A local stand-in for the supplier: deterministic demo products, recorded callbacks.

`GET /products/<sku>` answers for demo SKUs (see devtools/demo.py) and 404 otherwise;
`POST /status` records a status callback; `GET /status` lists the ones received. Options
make it slow, flaky or malformed, and tests can script exact answers per SKU.

By default the catalogue is plain: fixed prices, no failures (tests rely on it). The demo
mode (`StubBehaviour(demo=True)`, `supplier_stub --demo`, what `make run` starts) tells the
refresh story instead: prices drift between refresh rounds, and the SKUs in DEMO_FAILURES
fail in each way the client handles, permanent or retried.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from devtools.demo import DEMO_PREFIX, DRIFT_SHARE, supplier_record
from devtools.httpstub import RecordingServer, Request, Response

# Demo mode: how these SKUs of the demo catalogue (seed_demo creates 1..200) fail. "First
# answer of each round" failures are transient: the client retries and then succeeds.
DEMO_FAILURES: dict[str, str] = {
    "DEMO-00013": "unknown",  # 404: the supplier does not know it (permanent)
    "DEMO-00099": "unknown",
    "DEMO-00027": "slow",  # first answer of each round after slow_seconds: read timeout
    "DEMO-00042": "server-error",  # first answer of each round is HTTP 500
    "DEMO-00058": "malformed",  # never valid JSON (permanent)
    "DEMO-00071": "out-of-range",  # a negative stock (permanent: fails validation)
}
_DEMO_KINDS = {
    "unknown": "HTTP 404, unknown SKU (permanent)",
    "malformed": "a body that is not JSON (permanent)",
    "out-of-range": "a negative stock (permanent: fails validation)",
    "slow": "the first answer of each round comes after --slow-seconds, beyond the "
    "client's read timeout (retried, then succeeds)",
    "server-error": "HTTP 500 first in each round (retried, then succeeds)",
}
DEMO_HELP = (
    "Demo mode (--demo, what make run starts): each refresh of a product is a new round "
    "for it (a round ends with its next successful answer). In each round about "
    f"{DRIFT_SHARE:.0%} of products move 2-15 % in price, so from the second refresh on a "
    "few price changes are recorded; retries within a round see the same price. Fixed "
    "SKUs fail: "
    + "; ".join(
        " and ".join(sku for sku, k in DEMO_FAILURES.items() if k == kind) + ": " + text
        for kind, text in _DEMO_KINDS.items()
    )
    + "."
)


@dataclass
class StubBehaviour:
    latency: float = 0.0  # seconds added to every product answer
    error_rate: float = 0.0  # share of product answers that are HTTP 500
    malformed_rate: float = 0.0  # share of product answers that are not JSON
    slow_rate: float = 0.0  # share of product answers delayed by slow_seconds
    slow_seconds: float = 30.0  # longer than the client's read timeout (10 s by default)
    callback_status: int = 200
    seed: int = 0
    demo: bool = False  # drifting prices and the DEMO_FAILURES (see DEMO_HELP)


@dataclass
class SupplierStub:
    behaviour: StubBehaviour = field(default_factory=StubBehaviour)
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (tests)
    # Extra products beyond the demo catalogue, by SKU.
    catalogue: dict[str, dict[str, Any]] = field(default_factory=dict)
    _scripts: dict[str, deque[Response]] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.behaviour.seed)
        # Demo mode: successful answers served per SKU (its round), and the SKUs whose
        # once-per-round failure this round has already been served.
        self._rounds: dict[str, int] = {}
        self._failed_this_round: set[str] = set()
        self.server = RecordingServer(self.handle, self.host, self.port)

    def script(self, sku: str, *responses: Response) -> None:
        """Answer the next requests for `sku` with these, in order, then as usual."""
        with self._lock:
            self._scripts[sku].extend(responses)

    def reset(self, behaviour: StubBehaviour | None = None) -> None:
        with self._lock:
            self._scripts.clear()
            self.catalogue.clear()
            self.behaviour = behaviour or StubBehaviour()
            self._rng = random.Random(self.behaviour.seed)
            self._rounds.clear()
            self._failed_this_round.clear()
        with self.server._lock:
            self.server.requests.clear()
        self.server.peak_in_flight = self.server.in_flight

    def stats(self) -> dict[str, Any]:
        """Product requests served, the most ever in flight at once, callbacks received."""
        return {
            "product_requests": len(self.product_requests()),
            "peak_in_flight": self.server.peak_in_flight,
            "callbacks": [
                {"received_at": r.received_at, "body": r.json()} for r in self.callbacks()
            ],
        }

    def record(self, sku: str) -> dict[str, Any] | None:
        if sku in self.catalogue:
            return self.catalogue[sku]
        return supplier_record(sku) if sku.startswith(DEMO_PREFIX) else None

    def round(self, sku: str) -> int:
        """Demo mode: the refresh round `sku` is in (its successful answers so far)."""
        with self._lock:
            return self._rounds.get(sku, 0)

    def handle(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path == "/status":
            if request.method == "POST":
                return Response(self.behaviour.callback_status, {"received": True})
            return Response(200, [r.json() for r in self.callbacks()])
        if path == "/stats":  # benchmarks: what the stand-in saw, from another process
            return Response(200, self.stats())
        if request.method != "GET" or not path.startswith("/products/"):
            return Response(404, {"error": "not found"})
        sku = path.removeprefix("/products/")
        with self._lock:
            if self._scripts.get(sku):
                return self._scripts[sku].popleft()
            roll = self._rng.random
            b = self.behaviour
            delay = b.latency + (b.slow_seconds if roll() < b.slow_rate else 0.0)
            if b.demo and sku in DEMO_FAILURES:
                failure = self._demo_failure(sku, delay)
                if failure is not None:
                    return failure
            if roll() < b.error_rate:
                return Response(500, {"error": "internal"}, delay=delay)
            if roll() < b.malformed_rate:
                return Response(200, "{this is not json", delay=delay)
            if b.demo and sku.startswith(DEMO_PREFIX) and sku not in self.catalogue:
                return Response(200, self._demo_record(sku), delay=delay)
        record = self.record(sku)
        if record is None:
            return Response(404, {"error": f"unknown sku {sku}"}, delay=delay)
        return Response(200, record, delay=delay)

    def _demo_failure(self, sku: str, delay: float) -> Response | None:
        """The demo answer for a DEMO_FAILURES sku, or None to answer normally (lock held)."""
        kind = DEMO_FAILURES[sku]
        if kind == "unknown":
            return Response(404, {"error": f"unknown sku {sku}"}, delay=delay)
        if kind == "malformed":
            return Response(200, '{"sku": "' + sku + '", "price": ', delay=delay)
        if kind in ("slow", "server-error") and sku not in self._failed_this_round:
            self._failed_this_round.add(sku)
            if kind == "server-error":
                return Response(500, {"error": "internal"}, delay=delay)
            slow = delay + self.behaviour.slow_seconds
            return Response(200, supplier_record(sku, self._rounds.get(sku, 0)), delay=slow)
        return None

    def _demo_record(self, sku: str) -> dict[str, Any]:
        """This round's record for `sku`, which ends its round (lock held)."""
        rounds = self._rounds.get(sku, 0)
        record = supplier_record(sku, rounds)
        if DEMO_FAILURES.get(sku) == "out-of-range":
            record["stock"] = -5
        self._rounds[sku] = rounds + 1
        self._failed_this_round.discard(sku)
        return record

    def callbacks(self) -> list[Request]:
        return self.server.received("POST", "/status")

    def product_requests(self, sku: str | None = None) -> list[Request]:
        return self.server.received("GET", f"/products/{sku}" if sku else "/products/")
