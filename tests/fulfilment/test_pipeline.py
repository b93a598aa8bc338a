"""The pipeline end to end, on real workers and the warehouse and carrier stand-ins.

Tests settings: FULFILMENT_BATCH_SIZE=5, FULFILMENT_BATCH_MAX_WAIT=2 s, FULFILMENT_MAX_RETRIES=2
with backoff capped at 1 s. Assertions are on rows, requests the stand-ins received, mail
the sink received and dead letters; never on how long something took.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from core import reconciler
from core.models import DeadLetter, OutboxMessage
from core.waiting import wait_for
from devtools.fulfilment_stub import ALWAYS
from devtools.httpstub import Response
from fulfilment import services
from fulfilment.models import BatchOrder, Fulfilment, FulfilmentBatch
from fulfilment.workflows import orders_release_request
from notifications.models import Notification
from tests.fulfilment.conftest import make_orders, wait_batch_settled, wait_final

pytestmark = pytest.mark.timeout(120)

Status = Fulfilment.Status


def refs(request) -> list[str]:
    return sorted(
        request.json().get("orders") or [p["reference"] for p in request.json()["parcels"]]
    )


def test_a_full_batch_closes_at_once_and_ships_with_one_call_per_stage(
    workers, warehouse, carrier, smtp
):
    orders = make_orders(10)
    released, _ = orders_release_request(order_ids=[o.pk for o in orders], warehouse="north")
    assert released.released == 10

    shipped = wait_final(orders)
    assert {f.status for f in shipped.values()} == {Status.SHIPPED}
    assert all(f.tracking_number.startswith("TRK") and f.label for f in shipped.values())
    batches = list(FulfilmentBatch.objects.order_by("pk"))
    assert [b.total for b in batches] == [5, 5]  # closed by size (5), not by age
    for batch in batches:
        wait_batch_settled(batch)
    assert {b.status for b in batches} == {FulfilmentBatch.Status.SUCCEEDED}
    assert {b.warehouse for b in batches} == {"north"}
    # One warehouse call and one carrier call per batch, five orders each.
    assert sorted(len(refs(r)) for r in warehouse.calls()) == [5, 5]
    assert sorted(len(refs(r)) for r in carrier.calls()) == [5, 5]
    assert all(b.picked_at and b.packed_at and b.shipped_at for b in batches)
    # Every customer is told, once.
    wait_for(
        lambda: all(smtp.messages(o.customer_email) for o in orders),
        timeout=30,
        what="shipping mails",
    )
    assert all(len(smtp.messages(o.customer_email)) == 1 for o in orders)
    assert "has shipped" in smtp.messages(orders[0].customer_email)[0].subject


def test_a_batch_closes_by_age_when_no_further_order_arrives(workers, warehouse, carrier):
    orders = make_orders(2)
    orders_release_request(order_ids=[o.pk for o in orders], warehouse="south")

    shipped = wait_final(orders)
    assert {f.status for f in shipped.values()} == {Status.SHIPPED}
    (batch,) = FulfilmentBatch.objects.all()
    assert (batch.total, batch.warehouse) == (2, "south")


def test_the_reconciler_closes_an_overdue_batch_whose_timer_was_lost(workers, warehouse, carrier):
    """A restart loses the aggregator's delayed message; released_at is in the database."""
    orders = make_orders(3)
    # Released without waking the aggregator: as if its message was lost with a node.
    services.orders_release(order_ids=[o.pk for o in orders], warehouse="north")
    Fulfilment.objects.update(released_at=timezone.now() - timedelta(minutes=5))
    assert not FulfilmentBatch.objects.exists()

    outcome = reconciler.reconcile()

    assert "closed 1 fulfilment batch" in outcome.summary()
    shipped = wait_final(orders)
    assert {f.status for f in shipped.values()} == {Status.SHIPPED}


def test_a_refused_order_is_split_out_the_rest_ships_and_it_ends_in_a_dead_letter(
    workers, warehouse, carrier
):
    orders = make_orders(5)
    bad = orders[2].reference
    warehouse.refuse(bad, ALWAYS, "aisle 7 is flooded")
    orders_release_request(order_ids=[o.pk for o in orders], warehouse="north")

    final = wait_final(orders)
    assert final.pop(bad).status == Status.FAILED
    assert {f.status for f in final.values()} == {Status.SHIPPED}
    (parent,) = FulfilmentBatch.objects.filter(rerun_of__isnull=True)
    (solo,) = FulfilmentBatch.objects.filter(rerun_of=parent)
    wait_batch_settled(parent)
    wait_batch_settled(solo)
    assert parent.status == FulfilmentBatch.Status.COMPLETED_WITH_ERRORS
    assert (parent.succeeded, parent.failed) == (4, 1)
    split = BatchOrder.objects.get(run=parent, status=BatchOrder.Status.FAILED)
    assert split.error == f"split out into batch #{solo.pk}: aisle 7 is flooded"
    # Retried alone: the batch's call, then the first try and two retries of its own.
    assert warehouse.refused[bad] == 1 + 1 + 2
    assert [refs(r) for r in warehouse.calls()].count([bad]) == 3
    assert solo.status == FulfilmentBatch.Status.FAILED
    # The carrier never heard of it; its neighbours shipped in one call.
    assert [len(refs(r)) for r in carrier.calls()] == [4]
    letter = wait_for(
        lambda: DeadLetter.objects.filter(task_name="fulfilment.tasks.batch_pick").first(),
        timeout=10,
        what="a dead letter",
    )
    assert letter.queue == "fulfilment.pick.north"
    assert "aisle 7 is flooded" in letter.message
    assert letter.run == solo
    assert Fulfilment.objects.get(order__reference=bad).error.startswith("gave up after 3 attempts")


def test_an_order_refused_once_is_retried_alone_and_ships(workers, warehouse, carrier):
    orders = make_orders(5)
    flaky = orders[0].reference
    warehouse.refuse(flaky, 1, "picker on a break")
    orders_release_request(order_ids=[o.pk for o in orders], warehouse="south")

    final = wait_final(orders)
    assert {f.status for f in final.values()} == {Status.SHIPPED}
    solo = FulfilmentBatch.objects.get(rerun_of__isnull=False)
    assert wait_batch_settled(solo).status == FulfilmentBatch.Status.SUCCEEDED
    assert final[flaky].batch_id == solo.pk


def test_transient_warehouse_errors_and_a_conflict_are_retried_with_the_same_idempotency_key(
    workers, warehouse, carrier
):
    # 409: a request with the same idempotency key still in progress at the API.
    warehouse.script(Response(409, {"error": "in progress"}), Response(503, {"error": "busy"}))
    orders = make_orders(5)
    orders_release_request(order_ids=[o.pk for o in orders], warehouse="north")

    final = wait_final(orders)
    assert {f.status for f in final.values()} == {Status.SHIPPED}
    calls = warehouse.calls()
    assert len(calls) == 3  # two failures, then the answer
    assert len({c.headers["idempotency-key"] for c in calls}) == 1
    (batch,) = FulfilmentBatch.objects.all()
    assert batch.pick_attempts == 3
    assert not DeadLetter.objects.exists()


def test_a_stage_that_always_fails_ends_in_a_dead_letter(workers, warehouse, carrier):
    carrier.script(*[Response(503, {"error": "down"})] * 3)  # the first try and two retries
    orders = make_orders(5)
    orders_release_request(order_ids=[o.pk for o in orders], warehouse="south")

    letter = wait_for(
        lambda: DeadLetter.objects.filter(task_name="fulfilment.tasks.batch_ship").first(),
        timeout=30,
        what="the ship stage's dead letter",
    )
    assert letter.queue == "fulfilment.ship.south"
    assert "gave up after 3 attempts" in letter.message
    assert len(carrier.calls()) == 3
    (batch,) = FulfilmentBatch.objects.all()
    assert letter.run == batch
    # Nothing shipped, nothing lost: the orders wait packed for the reconciler or a replay.
    assert set(Fulfilment.objects.values_list("status", flat=True)) == {Status.PACKED}
    assert batch.ship_attempts == 3

    # Much later, the reconciler has resumed it as often as it may: it gives up, and the
    # orders fail with its reason instead of waiting for ever.
    an_hour_ago = timezone.now() - timedelta(hours=1)
    FulfilmentBatch.objects.filter(pk=batch.pk).update(
        resumes=settings.RUN_MAX_RESUMES, progress_at=an_hour_ago
    )
    OutboxMessage.objects.update(published_at=an_hour_ago)
    BatchOrder.objects.update(retry_at=None)
    assert reconciler.reconcile().finished == [f"fulfilment batch #{batch.pk}"]
    final = wait_final(orders)
    assert {f.status for f in final.values()} == {Status.FAILED}
    assert all("recovery attempts" in f.error for f in final.values())
    assert wait_batch_settled(batch).status == FulfilmentBatch.Status.FAILED


def test_a_batch_delivered_twice_ships_once(app, workers, warehouse, carrier, smtp):
    orders = make_orders(5)
    orders_release_request(order_ids=[o.pk for o in orders], warehouse="north")
    wait_final(orders)
    (batch,) = FulfilmentBatch.objects.all()
    wait_batch_settled(batch)

    # Every stage delivered again (a redelivery after a lost ack), twice at once.
    for stage in ("pick", "pack", "ship", "ship"):
        app.send_task(
            f"fulfilment.tasks.batch_{stage}",
            kwargs={"run_id": batch.pk},
            queue=f"fulfilment.{stage}.north",
        )
    workers.wait_idle(app.conf.broker_url)

    assert len(warehouse.calls()) == 1
    assert len(carrier.calls()) == 1
    assert sum(carrier.shipments_created.values()) == 5
    assert Notification.objects.count() == 5
    wait_for(lambda: all(smtp.messages(o.customer_email) for o in orders), timeout=30, what="mails")
    assert all(len(smtp.messages(o.customer_email)) == 1 for o in orders)


def test_two_ship_deliveries_at_once_create_one_shipment_per_order(app, workers, carrier):
    """Both read the orders as packed before either writes: the carrier's idempotency key
    and the guarded transition still make one shipment and one notification per order."""
    orders = make_orders(4)
    with_status_packed(orders)
    batch = FulfilmentBatch.objects.get()
    carrier.reset(latency=0.3)  # both calls are in flight together

    for _ in range(2):
        app.send_task(
            "fulfilment.tasks.batch_ship",
            kwargs={"run_id": batch.pk},
            queue="fulfilment.ship.north",
        )
    final = wait_final(orders)
    workers.wait_idle(app.conf.broker_url)

    assert {f.status for f in final.values()} == {Status.SHIPPED}
    assert set(carrier.shipments_created.values()) == {1}
    assert Notification.objects.count() == 4
    assert wait_batch_settled(batch).status == FulfilmentBatch.Status.SUCCEEDED


def with_status_packed(orders) -> None:
    """A batch of `orders` already picked and packed (labels need no file to ship)."""
    services.orders_release(order_ids=[o.pk for o in orders], warehouse="north")
    batch = FulfilmentBatch.objects.create(warehouse="north", total=len(orders))
    fulfilments = Fulfilment.objects.filter(order__in=orders)
    fulfilments.update(status=Status.PACKED, batch=batch)
    BatchOrder.objects.bulk_create(BatchOrder(run=batch, fulfilment=f) for f in fulfilments)


def test_an_order_placed_through_the_service_is_released_and_ships(workers, warehouse, carrier):
    from decimal import Decimal

    from fulfilment.workflows import order_place
    from shop.models import Product

    product = Product.objects.create(sku="FUL-PLACE", name="Stapler", price=Decimal("12.00"))
    order = order_place(
        reference="PLACED-1",
        customer_email="placed@fulfil.example",
        lines=[(product.pk, 1, Decimal("12.00"))],
    )

    final = wait_final([order])
    assert final["PLACED-1"].status == Status.SHIPPED
    assert final["PLACED-1"].warehouse == services.warehouse_for("PLACED-1")
