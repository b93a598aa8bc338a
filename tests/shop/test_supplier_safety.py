"""Bad supplier data fails one product only, and the client goes nowhere it was not sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection

from devtools.demo import demo_sku, supplier_record
from devtools.httpstub import RecordingServer, Response
from shop import supplier as client
from shop.models import Product, RefreshRun
from shop.workflows import refresh_run_request
from tests.shop.conftest import make_products, wait_finished

pytestmark = pytest.mark.workers


def refresh(products: list[Product]) -> RefreshRun:
    run, _ = refresh_run_request(product_ids=[p.pk for p in products], trigger="command")
    return wait_finished(run)


def errors() -> dict[str, str]:
    return dict(Product.objects.exclude(last_error="").values_list("sku", "last_error"))


def test_out_of_range_values_fail_their_product_and_the_rest_of_the_chunk_is_written(
    workers, supplier
):
    good, big_price, big_stock, long_name = make_products(4)
    supplier.script(big_price.sku, Response(200, {**supplier_record(big_price.sku),
                                                  "price": "12345678901234.00"}))  # fmt: skip
    supplier.script(big_stock.sku, Response(200, {**supplier_record(big_stock.sku),
                                                  "stock": 2**40}))  # fmt: skip
    supplier.script(long_name.sku, Response(200, {**supplier_record(long_name.sku),
                                                  "name": "x" * 300}))  # fmt: skip

    run = refresh([good, big_price, big_stock, long_name])

    assert run.status == RefreshRun.Status.COMPLETED_WITH_ERRORS
    assert (run.succeeded, run.failed) == (1, 3)
    assert Product.objects.get(pk=good.pk).name == supplier_record(good.sku)["name"]
    found = errors()
    assert "price 12345678901234.00 is out of range" in found[big_price.sku]
    assert f"stock {2**40} is out of range" in found[big_stock.sku]
    assert "name is 300 characters long (at most 255)" in found[long_name.sku]
    assert Product.objects.get(pk=big_price.pk).price == good.price  # nothing half-applied


@pytest.fixture
def database_refuses_stock_4242() -> Iterator[None]:
    """A rule the database enforces and the client does not know (a constraint added later)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "CREATE TRIGGER refuse_4242 BEFORE UPDATE ON shop_product "
                "WHEN NEW.stock = 4242 BEGIN SELECT RAISE(ABORT, 'stock 4242 refused'); END"
            )
        else:
            cursor.execute(
                "ALTER TABLE shop_product ADD CONSTRAINT refuse_4242 "
                "CHECK (stock <> 4242) NOT VALID"
            )
    yield
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("DROP TRIGGER refuse_4242")
        else:
            cursor.execute("ALTER TABLE shop_product DROP CONSTRAINT refuse_4242")


def test_a_row_the_database_refuses_fails_that_product_only(
    workers, supplier, database_refuses_stock_4242
):
    products = make_products(3)
    refused = products[1]
    supplier.script(refused.sku, Response(200, {**supplier_record(refused.sku), "stock": 4242}))

    run = refresh(products)

    assert (run.succeeded, run.failed) == (2, 1)
    assert "could not save the supplier's data: IntegrityError" in errors()[refused.sku]
    refreshed = Product.objects.exclude(pk=refused.pk)
    assert all(p.last_refreshed_at and not p.last_error for p in refreshed)


@pytest.fixture
def trap() -> Iterator[RecordingServer]:
    """Something on a loopback port the supplier must never make us call (Redis, say)."""
    with RecordingServer(lambda r: Response(200, {"you": "should not be here"})) as server:
        yield server


@pytest.mark.parametrize("where", ["trap", "http://169.254.169.254/latest/meta-data/"])
def test_a_redirect_is_not_followed(workers, supplier, trap, where):
    [product] = make_products(1)
    location = f"{trap.url}/" if where == "trap" else where
    supplier.script(product.sku, Response(302, "", headers={"Location": location}))

    run = refresh([product])

    assert run.status == RefreshRun.Status.FAILED
    error = errors()[product.sku]
    assert f"answered with a redirect (HTTP 302 to {location})" in error
    assert "redirects are not followed" in error
    assert trap.received() == []
    assert len(supplier.product_requests(product.sku)) == 1  # permanent: not retried


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379/", "http://169.254.169.254/", "http://10.1.2.3/x"]
)
def test_an_internal_address_that_is_not_configured_is_refused(url, settings):
    settings.SUPPLIER_API_URL = "https://supplier.example.com"
    settings.STATUS_CALLBACK_URL = "https://status.example.com/hook"
    with pytest.raises(client.PermanentError, match="resolves to the internal address"):
        client.check_destination(url)


def test_the_configured_host_is_allowed_even_on_loopback(settings, supplier):
    settings.SUPPLIER_API_URL = supplier.server.url
    client.check_destination(f"{supplier.server.url}/products/X")  # does not raise


def test_a_kept_alive_connection_the_supplier_closed_is_not_reused(settings):
    """The pooled connection's liveness check (a zero-timeout poll, shop.supplier): a
    supplier restart closes every kept-alive connection, and the next fetch must open a
    new one rather than fail on the dead one.
    """
    from devtools.redis_server import free_port
    from devtools.supplier_stub import SupplierStub

    port = free_port()
    settings.SUPPLIER_API_URL = f"http://127.0.0.1:{port}"
    first = SupplierStub(port=port)
    first.server.start()
    try:
        assert client.fetch_product(demo_sku(1)).sku == demo_sku(1)
    finally:
        first.server.stop()  # closes the connection the client keeps
    second = SupplierStub(port=port)
    second.server.start()
    try:
        assert client.fetch_product(demo_sku(2)).sku == demo_sku(2)
        assert len(second.server.received("GET")) == 1
    finally:
        second.server.stop()
