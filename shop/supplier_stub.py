"""A local stand-in for the supplier: deterministic demo products, recorded callbacks.

`GET /products/<sku>` answers for demo SKUs (see shop/demo.py) and 404 otherwise;
`POST /status` records a status callback; `GET /status` lists the ones received. Options
make it slow, flaky or malformed, and tests can script exact answers per SKU.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from core.httpstub import RecordingServer, Request, Response
from shop.demo import DEMO_PREFIX, supplier_record


@dataclass
class StubBehaviour:
    latency: float = 0.0  # seconds added to every product answer
    error_rate: float = 0.0  # share of product answers that are HTTP 500
    malformed_rate: float = 0.0  # share of product answers that are not JSON
    slow_rate: float = 0.0  # share of product answers delayed by slow_seconds
    slow_seconds: float = 30.0
    callback_status: int = 200
    seed: int = 0


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
        with self.server._lock:
            self.server.requests.clear()

    def record(self, sku: str) -> dict[str, Any] | None:
        if sku in self.catalogue:
            return self.catalogue[sku]
        return supplier_record(sku) if sku.startswith(DEMO_PREFIX) else None

    def handle(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path == "/status":
            if request.method == "POST":
                return Response(self.behaviour.callback_status, {"received": True})
            return Response(200, [r.json() for r in self.callbacks()])
        if request.method != "GET" or not path.startswith("/products/"):
            return Response(404, {"error": "not found"})
        sku = path.removeprefix("/products/")
        with self._lock:
            if self._scripts.get(sku):
                return self._scripts[sku].popleft()
            roll = self._rng.random
            b = self.behaviour
            delay = b.latency + (b.slow_seconds if roll() < b.slow_rate else 0.0)
            if roll() < b.error_rate:
                return Response(500, {"error": "internal"}, delay=delay)
            if roll() < b.malformed_rate:
                return Response(200, "{this is not json", delay=delay)
        record = self.record(sku)
        if record is None:
            return Response(404, {"error": f"unknown sku {sku}"}, delay=delay)
        return Response(200, record, delay=delay)

    def callbacks(self) -> list[Request]:
        return self.server.received("POST", "/status")

    def product_requests(self, sku: str | None = None) -> list[Request]:
        return self.server.received("GET", f"/products/{sku}" if sku else "/products/")
