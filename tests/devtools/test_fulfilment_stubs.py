"""The warehouse and carrier stand-ins answer over HTTP as the fulfilment clients expect."""

from __future__ import annotations

import json

import pytest
import urllib3

from devtools.fulfilment_stub import ALWAYS, CarrierStub, WarehouseStub
from devtools.httpstub import Response


def post(url: str, body: dict, key: str = "") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    answer = urllib3.request("POST", url, body=json.dumps(body).encode(), headers=headers)
    return answer.status, answer.json()


@pytest.fixture
def carrier():
    stub = CarrierStub()
    stub.server.start()
    yield stub
    stub.server.stop()


def test_the_carrier_ships_once_per_idempotency_key_and_refuses_on_request(carrier):
    carrier.refuse("B", times=1, reason="no such street")
    parcels = {"batch": 1, "parcels": [{"reference": "A"}, {"reference": "B"}]}

    first = post(f"{carrier.server.url}/shipments", parcels, key="k1")
    again = post(f"{carrier.server.url}/shipments", parcels, key="k1")
    other = post(f"{carrier.server.url}/shipments", parcels, key="k2")

    assert first == again
    assert first[1]["failed"] == {"B": "no such street"}
    assert list(first[1]["shipments"]) == ["A"]
    assert sorted(other[1]["shipments"]) == ["A", "B"]  # refused once only
    assert carrier.shipments_created == {"A": 2, "B": 1}  # k1 once, k2 once
    stats = urllib3.request("GET", f"{carrier.server.url}/stats").json()
    assert stats["calls"] == 3 and stats["shipments"] == 3


def test_the_warehouse_answers_scripted_errors_then_picks():
    stub = WarehouseStub()
    stub.server.start()
    try:
        stub.script(Response(503, {"error": "busy"}))
        stub.refuse("X", ALWAYS)
        url = f"{stub.server.url}/pick"
        assert post(url, {"orders": ["X", "Y"]})[0] == 503
        status, answer = post(url, {"orders": ["X", "Y"]})
        assert (status, answer["picked"], list(answer["failed"])) == (200, ["Y"], ["X"])
        assert post(url, {"nothing": 1})[0] == 400
    finally:
        stub.server.stop()
