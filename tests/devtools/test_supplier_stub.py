"""The supplier stand-in over HTTP: plain by default, the demo story with --demo."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
import requests
from django.core.management import call_command

from devtools.demo import DRIFT_SHARE, demo_sku, supplier_record
from devtools.supplier_stub import DEMO_FAILURES, DEMO_HELP, StubBehaviour, SupplierStub
from shop import supplier as client

CATALOGUE = [demo_sku(i) for i in range(1, 201)]  # what seed_demo creates
FAILING = {kind: sku for sku, kind in DEMO_FAILURES.items()}


@pytest.fixture
def demo(settings) -> Iterator[SupplierStub]:
    """A demo-mode stand-in, and the real client pointed at it (read timeout 1 s)."""
    stub = SupplierStub(StubBehaviour(demo=True, slow_seconds=1.5))
    stub.server.start()
    settings.SUPPLIER_API_URL = stub.server.url
    yield stub
    stub.server.stop()


def price(stub: SupplierStub, sku: str) -> str:
    answer = requests.get(f"{stub.server.url}/products/{sku}", timeout=5)
    assert answer.status_code == 200, (sku, answer.status_code)
    return answer.json()["price"]


def test_plain_mode_serves_the_fixed_catalogue_even_for_the_demo_failure_skus(supplier):
    for sku in [*DEMO_FAILURES, "DEMO-00001"]:
        for _ in range(2):
            answer = requests.get(f"{supplier.server.url}/products/{sku}", timeout=5)
            assert (answer.status_code, answer.json()) == (200, supplier_record(sku))


def test_demo_unknown_skus_are_404_and_permanent(demo):
    unknown = [sku for sku, kind in DEMO_FAILURES.items() if kind == "unknown"]
    assert len(unknown) == 2
    for sku in unknown:
        for _ in range(2):
            with pytest.raises(client.PermanentError, match="not found at the supplier"):
                client.fetch_product(sku)


def test_demo_malformed_sku_is_never_json(demo):
    for _ in range(2):
        with pytest.raises(client.PermanentError, match="malformed JSON"):
            client.fetch_product(FAILING["malformed"])


def test_demo_out_of_range_sku_fails_validation(demo):
    with pytest.raises(client.PermanentError, match="stock -5 is not a non-negative integer"):
        client.fetch_product(FAILING["out-of-range"])


@pytest.mark.parametrize(
    "kind,error",
    [("server-error", r"supplier error \(HTTP 500\)"), ("slow", "supplier timed out")],
)
def test_demo_transient_failures_happen_once_per_round_then_succeed(demo, kind, error):
    sku = FAILING[kind]
    for round_ in range(3):
        with pytest.raises(client.TransientError, match=error):
            client.fetch_product(sku)
        product = client.fetch_product(sku)  # the retry, same round
        assert product.price == Decimal(supplier_record(sku, round_)["price"])
        assert demo.round(sku) == round_ + 1


def test_demo_slow_answer_carries_the_same_price_as_its_round(demo):
    """Stable within a round: a client patient enough gets the round's price, late."""
    sku = FAILING["slow"]
    late = requests.get(f"{demo.server.url}/products/{sku}", timeout=5)
    on_time = requests.get(f"{demo.server.url}/products/{sku}", timeout=5)
    assert late.elapsed.total_seconds() >= 1.5 > on_time.elapsed.total_seconds()
    assert late.json() == on_time.json() == supplier_record(sku, 0)
    assert demo.round(sku) == 1


def test_demo_prices_move_for_a_few_products_between_rounds(demo):
    healthy = [sku for sku in CATALOGUE if sku not in DEMO_FAILURES]
    first = {sku: price(demo, sku) for sku in healthy}
    second = {sku: price(demo, sku) for sku in healthy}

    assert first == {sku: supplier_record(sku)["price"] for sku in healthy}  # the catalogue
    assert second == {sku: supplier_record(sku, 1)["price"] for sku in healthy}
    moved = [sku for sku in healthy if first[sku] != second[sku]]
    assert 0.01 * len(healthy) <= len(moved) <= 3 * DRIFT_SHARE * len(healthy)
    for sku in moved:
        change = Decimal(second[sku]) / Decimal(first[sku]) - 1
        assert Decimal("0.015") <= abs(change) <= Decimal("0.155"), (sku, change)


def test_demo_rounds_move_different_products_and_are_the_same_in_every_process():
    movers = [
        {sku for sku in CATALOGUE if supplier_record(sku, r) != supplier_record(sku, r - 1)}
        for r in (1, 2, 3)
    ]
    assert all(movers) and len(set.union(*movers)) > max(map(len, movers))
    # A hash of (sku, round), not Python's salted hash(): fixed figures across runs.
    assert supplier_record("DEMO-00062", 1)["price"] == "225.77"
    assert supplier_record("DEMO-00062", 0)["price"] == "198.08"


def test_reset_forgets_the_rounds(demo):
    sku = "DEMO-00062"  # its price moves in round 1
    assert price(demo, sku) == "198.08" and price(demo, sku) == "225.77"
    demo.reset(StubBehaviour(demo=True))
    assert price(demo, sku) == "198.08"


def test_the_command_help_documents_the_demo_mode(capsys):
    with pytest.raises(SystemExit):
        call_command("supplier_stub", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--demo" in text and "make run" in text
    for sku in DEMO_FAILURES:
        assert sku in text
    assert " ".join(DEMO_HELP.split()) in text
