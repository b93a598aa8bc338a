"""What the admin offers staff: only pages that hold something, records that stay as written."""

from __future__ import annotations

import re
from decimal import Decimal
from html import unescape

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from shop.models import PriceChange, Product
from tests.support.admin import csrf_client, csrf_token
from tests.support.factories import make_staff

pytestmark = pytest.mark.django_db


def window_title(page: str) -> str:
    match = re.search(r"<title>(.*?)</title>", page, re.S)
    assert match, "no <title>"
    return unescape(match.group(1)).strip()


def superuser() -> User:
    return User.objects.create_superuser("root", "root@example.com", "pw")


def test_the_index_offers_no_celery_results_pages_where_no_results_are_kept():
    client = csrf_client(superuser())

    index = client.get(reverse("admin:index")).text

    assert "Celery Results" not in index and "Task results" not in index
    assert client.get("/admin/django_celery_results/taskresult/").status_code == 404
    assert client.get("/admin/django_celery_results/groupresult/add/").status_code == 404
    assert "Dead letters" in index and reverse("queues") in index


def test_a_page_note_shows_under_the_title_and_stays_out_of_the_window_title(settings):
    settings.FAIR_QUEUE_IDLE_SECONDS = 300
    client = csrf_client(
        make_staff("ops", "view_deadletter", "view_fulfilmentbatch", "view_importqueue")
    )

    letters = client.get(reverse("admin:core_deadletter_changelist")).text
    batches = client.get(reverse("admin:fulfilment_fulfilmentbatch_changelist")).text
    queues = client.get(reverse("admin:imports_importqueue_changelist")).text

    assert window_title(letters) == "Select dead letter to view | Shop back office"
    assert '<p class="page-note">Open, per queue: none.</p>' in letters
    assert window_title(batches) == "Select fulfilment batch to view | Shop back office"
    pipeline = reverse("admin:fulfilment_pipeline")
    assert f'<a href="{pipeline}">Pipeline overview per warehouse and stage</a>' in batches
    assert window_title(queues) == "Select active import queue to view | Shop back office"
    assert "Idle queues are removed after 5 min by the reconciler" in queues


def test_recorded_price_changes_cannot_be_added_or_edited_even_by_a_superuser():
    product = Product.objects.create(sku="SKU-1", name="Kettle", price=Decimal("20.00"))
    change = PriceChange.objects.create(
        product=product, old_price=Decimal("19.00"), new_price=Decimal("20.00"),
        changed_at=timezone.now(),
    )  # fmt: skip
    client = csrf_client(superuser())
    listing = reverse("admin:shop_pricechange_changelist")
    detail = reverse("admin:shop_pricechange_change", args=[change.pk])

    assert "Add price change" not in client.get(listing).text
    assert client.get(reverse("admin:shop_pricechange_add")).status_code == 403
    page = client.get(detail).text
    assert "19.00" in page and 'name="_save"' not in page
    token = csrf_token(client, detail)
    forged = {"old_price": "1.00", "new_price": "2.00", "csrfmiddlewaretoken": token}
    assert client.post(detail, forged).status_code == 403
    change.refresh_from_db()
    assert (change.old_price, change.new_price) == (Decimal("19.00"), Decimal("20.00"))

    # Deleting a product still takes its history with it (a permission like any other).
    delete = reverse("admin:shop_product_delete", args=[product.pk])
    token = csrf_token(client, delete)
    assert client.post(delete, {"post": "yes", "csrfmiddlewaretoken": token}).status_code == 302
    assert not Product.objects.exists() and not PriceChange.objects.exists()
