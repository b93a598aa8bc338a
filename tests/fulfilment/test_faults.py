"""Fulfilment runs always finish: a node killed mid-call, the broker lost mid-pipeline,
PostgreSQL dropping every connection.

Each fault is induced on a real service while a stage's call is out (the stand-in answers
late), then the pipeline is shown recovered by the reconciler. What a customer sees is
asserted: every order shipped once, with one tracking number, and one email saying so.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import connection

from core.fleet import WorkerFleet
from core.waiting import wait_for
from fulfilment.models import Fulfilment, FulfilmentBatch
from fulfilment.workflows import orders_release_request
from shop.models import Order
from tests.fulfilment.conftest import make_orders, wait_final
from tests.support.faults import PrivateRedis, Reconciler, nodes_on_private_broker, publishing_to

pytestmark = [pytest.mark.workers, pytest.mark.timeout(180)]
PIPELINE = ("fulfil_pick", "fulfil_pack", "fulfil_ship", "notify")


def assert_shipped_once(orders: list[Order], carrier, smtp) -> None:
    """Shipped, one shipment each at the carrier, and the customer told its tracking
    number by one email."""
    shipped = wait_final(orders, timeout=90)
    assert {f.status for f in shipped.values()} == {Fulfilment.Status.SHIPPED}
    assert dict(carrier.shipments_created) == {o.reference: 1 for o in orders}
    wait_for(
        lambda: all(smtp.messages(o.customer_email) for o in orders),
        timeout=60,
        what="the shipping emails",
    )
    time.sleep(1)  # a second email would follow the first at once
    for order in orders:
        [mail] = smtp.messages(order.customer_email)
        assert f"Tracking number: {shipped[order.reference].tracking_number}" in mail.body
    assert set(FulfilmentBatch.objects.values_list("status", flat=True)) == {"succeeded"}


def test_a_ship_node_killed_mid_call_ships_every_order_once(workers, warehouse, carrier, smtp):
    carrier.reset(latency=3.0)  # the ship calls are out when the node dies
    orders = make_orders(10)
    orders_release_request(order_ids=[o.pk for o in orders], warehouse="north")
    wait_for(lambda: len(carrier.calls()) == 2, timeout=60, what="both ship calls out")

    workers.kill("fulfil_ship")  # kill -9: nothing recorded, nothing acknowledged
    assert not Fulfilment.objects.filter(status=Fulfilment.Status.SHIPPED).exists()
    carrier.latency = 0.0
    workers.restart("fulfil_ship")
    with Reconciler(workers.env, workers.log_dir / "reconciler-fulfilment.log"):
        assert_shipped_once(orders, carrier, smtp)
    assert len(carrier.calls()) == 4  # each batch's call again, with its key: same answer


@pytest.fixture
def pipeline_on_private_broker(workers: WorkerFleet, tmp_path_factory) -> Iterator[PrivateRedis]:
    with nodes_on_private_broker(
        workers, tmp_path_factory.mktemp("redis"), PIPELINE, "fulfilment-outage"
    ) as server:
        yield server


def test_the_broker_lost_mid_pipeline_and_back_empty_every_order_ships_once(
    app, warehouse, carrier, smtp, pipeline_on_private_broker
):
    broker = pipeline_on_private_broker
    fleet: WorkerFleet = broker.fleet  # type: ignore[attr-defined]
    warehouse.reset(latency=2.0)  # the pick calls are out when the broker goes
    orders = make_orders(15)
    with publishing_to(app, broker.url):
        orders_release_request(order_ids=[o.pk for o in orders], warehouse="south")
    wait_for(lambda: len(warehouse.calls()) == 3, timeout=60, what="the pick calls out")

    broker.stop()
    time.sleep(3)
    broker.start()  # back, and empty: every queued and unacknowledged message is gone
    warehouse.latency = 0.0

    with Reconciler(fleet.env, fleet.log_dir / "reconciler.log"):
        assert_shipped_once(orders, carrier, smtp)
    dead = {node: proc.returncode for node, proc in fleet.procs.items() if proc.poll() is not None}
    assert not dead, f"nodes died: {dead}"


def test_postgresql_dropping_connections_mid_pipeline_ships_every_order_once(
    workers, warehouse, carrier, smtp
):
    """A failover while the pick calls are out: every pooled connection of every node is
    closed by the server; the stages record their answers on new ones."""
    if connection.vendor != "postgresql":
        pytest.skip("terminating server connections is a PostgreSQL fault")
    warehouse.reset(latency=2.0)
    orders = make_orders(10)
    orders_release_request(order_ids=[o.pk for o in orders], warehouse="north")
    wait_for(lambda: len(warehouse.calls()) == 2, timeout=60, what="both pick calls out")

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] > 0
    warehouse.latency = 0.0

    with Reconciler(workers.env, workers.log_dir / "reconciler-fulfilment.log"):
        assert_shipped_once(orders, carrier, smtp)
