"""The reconciler's stall clock starts when a run's work reaches the broker, not when its
row was made: a run created in a long transaction (a big import, many users at once) is
not "stalled" the moment it commits.

Published to a Redis database no worker reads, so nothing moves the run but the clock.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core import reconciler
from core.models import OutboxMessage, RunEvent
from shop.models import Product, RefreshRun
from shop.workflows import refresh_run_request


@pytest.mark.django_db(transaction=True)
def test_a_run_is_stalled_only_once_its_publish_is_older_than_the_stall_time(unread_broker):
    product = Product.objects.create(sku="CLOCK-1", name="Clock", price="1.00")
    run, message = refresh_run_request(product_ids=[product.pk], trigger="command")
    assert OutboxMessage.objects.get(pk=message.pk).published_at is not None
    # Its row was made long ago, in a transaction that committed just now.
    an_hour_ago = timezone.now() - timedelta(hours=1)
    RefreshRun.objects.filter(pk=run.pk).update(created_at=an_hour_ago)

    assert reconciler.reconcile().resumed == []
    assert not RunEvent.objects.filter(object_id=run.pk, kind="resumed").exists()

    # Nothing happened for the stall time after the publish: now it is stalled.
    OutboxMessage.objects.filter(pk=message.pk).update(published_at=an_hour_ago)
    assert reconciler.reconcile().resumed == [f"refresh run #{run.pk}"]
    assert RunEvent.objects.filter(object_id=run.pk, kind="resumed").exists()
