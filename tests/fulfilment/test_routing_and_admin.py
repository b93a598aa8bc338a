"""Where each stage's message lands (on the broker itself), the admin and the command."""

from __future__ import annotations

import base64
import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from fulfilment import services
from fulfilment.models import BatchOrder, Fulfilment, FulfilmentBatch
from fulfilment.workflows import batch_remaining_work, orders_release_request
from proj import topology
from proj.topology.fulfilment import AGGREGATE_QUEUE, WAREHOUSES
from tests.fulfilment.conftest import make_orders
from tests.support.admin import csrf_client, post_action
from tests.support.factories import make_staff

Status = Fulfilment.Status
CHANGELIST = reverse("admin:fulfilment_fulfilmentorder_changelist")


def queued(client, queue: str) -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


def everywhere_but(client, queue: str) -> int:
    return sum(client.llen(q.name) for q in topology.QUEUES if q.name != queue)


def test_the_topology_declares_each_stage_per_warehouse_and_a_small_fleet():
    names = {q.name for q in topology.QUEUES}
    for stage in ("pick", "pack", "ship"):
        for warehouse in WAREHOUSES:
            assert f"fulfilment.{stage}.{warehouse}" in names
    pools = {p.name: p for p in topology.POOLS if p.name.startswith("fulfil_")}
    assert {p.pool for p in pools.values()} == {"gevent", "prefork"}
    assert pools["fulfil_pack"].pool == "prefork"
    assert pools["fulfil_pack"].max_tasks_per_child and pools["fulfil_pack"].max_memory_per_child
    assert sum(len(p.nodes) for p in pools.values()) == 3
    # What the Procfile's `workers run fulfil_pack` and `workers start` pass to the node.
    options = topology.worker_options(pools["fulfil_pack"])
    assert options[options.index("--max-tasks-per-child") + 1] == "200"
    assert options[options.index("--max-memory-per-child") + 1] == "256000"
    assert options[options.index("-P") + 1] == "prefork"


@pytest.mark.django_db
@pytest.mark.parametrize("warehouse", WAREHOUSES)
@pytest.mark.parametrize(
    "status,stage", [(Status.BATCHED, "pick"), (Status.PICKED, "pack"), (Status.PACKED, "ship")]
)
def test_each_stage_lands_on_its_warehouses_queue(app, isolated_broker, warehouse, status, stage):
    conn, client = isolated_broker
    orders = make_orders(2)
    services.orders_release(order_ids=[o.pk for o in orders], warehouse=warehouse)
    batch = FulfilmentBatch.objects.create(warehouse=warehouse, total=2)
    fulfilments = Fulfilment.objects.filter(order__in=orders)
    fulfilments.update(status=status, batch=batch)
    BatchOrder.objects.bulk_create(BatchOrder(run=batch, fulfilment=f) for f in fulfilments)

    app.signature(json.loads(json.dumps(batch_remaining_work(batch)))).apply_async(connection=conn)

    queue = f"fulfilment.{stage}.{warehouse}"
    (message,) = queued(client, queue)
    assert message["headers"]["task"] == f"fulfilment.tasks.batch_{stage}"
    assert everywhere_but(client, queue) == 0
    # The rest of the chain goes with it, each step on the same warehouse's queues.
    _, _, embed = json.loads(base64.b64decode(message["body"]))
    later = [step["options"]["queue"] for step in embed.get("chain") or []]
    stages = ["pick", "pack", "ship"]
    expected = [f"fulfilment.{s}.{warehouse}" for s in stages[stages.index(stage) + 1 :]]
    assert sorted(later) == sorted(expected)


def test_released_orders_wake_the_aggregator_on_its_queue(app, isolated_broker):
    conn, client = isolated_broker
    app.send_task("fulfilment.tasks.orders_aggregate", connection=conn)
    assert [m["headers"]["task"] for m in queued(client, AGGREGATE_QUEUE)] == [
        "fulfilment.tasks.orders_aggregate"
    ]
    assert everywhere_but(client, AGGREGATE_QUEUE) == 0


# --- admin -------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_release_action_is_permission_gated():
    orders = make_orders(3)
    viewer = make_staff("viewer", "view_fulfilmentorder")
    client = csrf_client(viewer)

    page = post_action(client, CHANGELIST, "release_for_fulfilment", orders)

    assert "You do not have permission" in page.content.decode()
    assert "nothing was started" in page.content.decode()
    assert not Fulfilment.objects.exists()

    releaser = make_staff("releaser", "view_fulfilmentorder", "release_fulfilmentorder")
    page = post_action(csrf_client(releaser), CHANGELIST, "release_for_fulfilment", orders)

    assert "3 orders released for fulfilment" in page.content.decode()
    assert Fulfilment.objects.filter(released_at__isnull=False).count() == 3


@pytest.mark.django_db
def test_the_orders_list_shows_and_filters_fulfilment_status():
    orders = make_orders(3)
    services.orders_release(order_ids=[orders[0].pk], warehouse="north")
    client = csrf_client(make_staff("viewer", "view_fulfilmentorder"))

    page = client.get(CHANGELIST).content.decode()
    assert "not released" in page and "Placed" in page

    placed = client.get(CHANGELIST + "?fulfilment=placed").content.decode()
    assert orders[0].reference in placed and orders[1].reference not in placed
    unreleased = client.get(CHANGELIST + "?fulfilment=unreleased").content.decode()
    assert orders[1].reference in unreleased and orders[0].reference not in unreleased


@pytest.mark.django_db
def test_the_pipeline_overview_counts_per_warehouse_and_stage():
    orders = make_orders(4)
    services.orders_release(order_ids=[o.pk for o in orders[:3]], warehouse="north")
    services.orders_release(order_ids=[orders[3].pk], warehouse="south")
    Fulfilment.objects.filter(order=orders[0]).update(status=Status.PICKED)
    client = csrf_client(make_staff("ops", "view_fulfilmentbatch"))

    page = client.get(reverse("admin:fulfilment_pipeline"))

    assert page.status_code == 200
    rows = {(r.warehouse, r.stage): r for r in services.pipeline_overview()}
    assert rows[("north", "batch")].waiting == 2
    assert rows[("north", "pack")].waiting == 1
    assert rows[("south", "batch")].waiting == 1
    html = page.content.decode()
    assert 'data-warehouse="north" data-stage="pack"' in html
    denied = csrf_client(make_staff("nobody")).get(reverse("admin:fulfilment_pipeline"))
    assert denied.status_code in (302, 403)


# --- the cron command ---------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    "options,message",
    [
        ({"warehouse": "east"}, "Unknown warehouse 'east'"),
        ({"order": ["NOPE-1"]}, "Unknown order reference(s): NOPE-1"),
        ({"timeout": 5}, "--timeout only applies with --wait"),
    ],
)
def test_bad_command_options_are_refused_and_release_nothing(options, message):
    make_orders(2)
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("release_orders", **options)
    assert not Fulfilment.objects.exists()


def test_a_non_positive_timeout_is_refused_by_the_parser():
    with pytest.raises(CommandError, match="--timeout: invalid positive value: '0'"):
        call_command("release_orders", "--wait", "--timeout", "0")


def test_the_command_releases_and_waits_until_shipped(workers, warehouse, carrier, capsys):
    orders = make_orders(3)
    with pytest.raises(SystemExit) as exit_:
        call_command("release_orders", "--wait", "--timeout", "60")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "3 orders released for fulfilment" in out
    assert "3 orders shipped, 0 failed" in out
    assert Fulfilment.objects.filter(order__in=orders, status=Status.SHIPPED).count() == 3
    # Run again: nothing left to release.
    call_command("release_orders")
    assert "No orders to release" in capsys.readouterr().out


@pytest.mark.django_db
def test_releasing_skips_cancelled_orders_and_counts_repeats():
    orders = make_orders(3)
    orders[2].status = orders[2].Status.CANCELLED
    orders[2].save()
    first, _ = orders_release_request(order_ids=[o.pk for o in orders])
    again, _ = orders_release_request(order_ids=[o.pk for o in orders])
    assert (first.released, first.not_releasable) == (2, 1)
    assert (again.released, again.already) == (0, 2)
    assert {f.warehouse for f in Fulfilment.objects.all()} <= set(WAREHOUSES)


@pytest.mark.django_db
def test_a_batch_page_shows_stage_timings_calls_and_its_orders():
    from datetime import timedelta

    from django.utils import timezone

    orders = make_orders(2)
    services.orders_release(order_ids=[o.pk for o in orders], warehouse="south")
    t0 = timezone.now()
    batch = FulfilmentBatch.objects.create(
        warehouse="south", total=2, status="succeeded", succeeded=2, started_at=t0,
        picked_at=t0 + timedelta(seconds=1), packed_at=t0 + timedelta(seconds=3),
        shipped_at=t0 + timedelta(seconds=4), finished_at=t0 + timedelta(seconds=4),
        pick_attempts=2, pack_attempts=1, ship_attempts=1, stage="done",
    )  # fmt: skip
    for f in Fulfilment.objects.all():
        f.status, f.batch = Status.SHIPPED, batch
        f.save()
        BatchOrder.objects.create(run=batch, fulfilment=f, status="succeeded")
    client = csrf_client(make_staff("ops", "view_fulfilmentbatch", "view_fulfilmentorder"))

    page = client.get(batch.get_absolute_url()).content.decode()

    assert "pick 1.0 s, pack 2.0 s, ship 1.0 s" in page
    assert "pick 2, pack 1, ship 1" in page
    assert all(o.reference in page for o in orders)
    listing = client.get(reverse("admin:fulfilment_fulfilmentbatch_changelist")).content.decode()
    assert "Pipeline overview per warehouse and stage" in listing


def test_retry_delays_back_off_exponentially_with_full_jitter(settings):
    settings.FULFILMENT_RETRY_BACKOFF = 2
    settings.FULFILMENT_RETRY_BACKOFF_MAX = 30
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 30), (9, 30)]:
        delays = [services.retry_delay(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the whole range: jitter, not a fixed wait
        assert len(set(delays)) > 150


@pytest.mark.django_db
def test_one_timer_per_oldest_waiting_order_however_many_releases():
    from django.utils import timezone

    orders = make_orders(3)
    now = timezone.now()
    services.orders_release(order_ids=[orders[0].pk], warehouse="north")
    first = services.batch_close_one(warehouse="north", now=now)
    services.orders_release(order_ids=[orders[1].pk], warehouse="north")
    second = services.batch_close_one(warehouse="north", now=now)
    # The delayed message itself always sets the next one (it may have come early).
    again = services.batch_close_one(warehouse="north", now=now, timer=True)

    assert isinstance(first, float) and 0 < first <= 3  # FULFILMENT_BATCH_MAX_WAIT=2
    assert second is None
    assert isinstance(again, float)
    assert services.batch_close_one(warehouse="south", now=now) is None  # nothing waits
    assert not FulfilmentBatch.objects.exists()
