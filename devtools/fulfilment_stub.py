"""Local stand-ins for the warehouse API (pick) and the carrier API (ship).

`POST /pick {"batch", "warehouse", "orders": [ref...]}` answers
`{"picked": [ref...], "failed": {ref: reason}}`; `POST /shipments {"batch", "warehouse",
"parcels": [{"reference", "email"}...]}` answers `{"shipments": {ref: tracking}, "failed":
{...}}`. Both honour `Idempotency-Key`: the same key gets the first answer again, and the
carrier creates a shipment per order only once (`shipments_created` counts them), which is
what "a batch delivered twice ships once" is checked against. `GET /stats` tells another
process (a benchmark) what the stand-in saw.

Tests script them: `refuse(ref, times)` refuses an order (times=-1: always), `script(...)`
answers the next calls with these responses (a 503, a slow answer), `latency` delays every
answer (20 ms in the benchmark).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from devtools.httpstub import RecordingServer, Request, Response

ALWAYS = -1


@dataclass
class _Stub:
    host: str = "127.0.0.1"
    port: int = 0
    latency: float = 0.0
    path: str = "/"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._scripts: deque[Response] = deque()
        self._refusals: dict[str, tuple[int, str]] = {}
        self._answers: dict[str, Any] = {}
        self.refused: Counter[str] = Counter()
        self.server = RecordingServer(self.handle, self.host, self.port)

    def reset(self, latency: float = 0.0) -> None:
        with self._lock:
            self.latency = latency
            self._scripts.clear()
            self._refusals.clear()
            self._answers.clear()
            self.refused.clear()
            self._reset()
        with self.server._lock:
            self.server.requests.clear()

    def _reset(self) -> None:
        pass

    def script(self, *responses: Response) -> None:
        """Answer the next calls with these, in order (whatever they ask), then as usual."""
        with self._lock:
            self._scripts.extend(responses)

    def refuse(self, reference: str, times: int = ALWAYS, reason: str = "out of stock") -> None:
        """Refuse this order the next `times` times it is asked for (ALWAYS: every time)."""
        with self._lock:
            self._refusals[reference] = (times, reason)

    def calls(self) -> list[Request]:
        return self.server.received("POST", self.path)

    def references(self, request: Request) -> list[str]:
        raise NotImplementedError

    def handle(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path == "/stats" and request.method == "GET":
            return Response(200, self.stats())
        if request.method != "POST" or path != self.path:
            return Response(404, {"error": "not found"})
        with self._lock:
            if self._scripts:
                return self._scripts.popleft()
            key = request.headers.get("idempotency-key", "")
            if key and key in self._answers:
                return Response(200, self._answers[key], delay=self.latency)
            try:
                refs = self.references(request)
            except (ValueError, KeyError, TypeError):
                return Response(400, {"error": "malformed request"})
            done: list[str] = []
            failed: dict[str, str] = {}
            for ref in refs:
                times, reason = self._refusals.get(ref, (0, ""))
                if times:
                    self._refusals[ref] = (times - 1 if times > 0 else times, reason)
                    self.refused[ref] += 1
                    failed[ref] = reason
                else:
                    done.append(ref)
            answer = self.answer(request, done, failed)
            if key:
                self._answers[key] = answer
        return Response(200, answer, delay=self.latency)

    def answer(self, request: Request, done: list[str], failed: dict[str, str]) -> Any:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {"calls": len(self.calls()), "peak_in_flight": self.server.peak_in_flight}


@dataclass
class WarehouseStub(_Stub):
    """The warehouse API: picks the orders of a batch in one call."""

    path: str = "/pick"

    def _reset(self) -> None:
        self.picked: Counter[str] = Counter()

    def __post_init__(self) -> None:
        super().__post_init__()
        self._reset()

    def references(self, request: Request) -> list[str]:
        return [str(ref) for ref in request.json()["orders"]]

    def answer(self, request: Request, done: list[str], failed: dict[str, str]) -> Any:
        self.picked.update(done)
        return {"picked": done, "failed": failed}


@dataclass
class CarrierStub(_Stub):
    """The carrier API: takes the parcels of a batch in one call, a tracking number each."""

    path: str = "/shipments"

    def _reset(self) -> None:
        self.shipments_created: Counter[str] = Counter()
        self._next = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._reset()

    def references(self, request: Request) -> list[str]:
        return [str(parcel["reference"]) for parcel in request.json()["parcels"]]

    def answer(self, request: Request, done: list[str], failed: dict[str, str]) -> Any:
        shipments = {}
        for ref in done:
            self._next += 1
            self.shipments_created[ref] += 1
            shipments[ref] = f"TRK{self._next:09d}"
        return {"shipments": shipments, "failed": failed}

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "shipments": sum(self.shipments_created.values())}
