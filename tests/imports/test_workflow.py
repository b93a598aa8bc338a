"""An import from upload to applied rows, on real workers: the run page, the row errors
file and who may download it, the user's queue consumed by every imports node."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.urls import reverse

from core.waiting import wait_for
from imports.models import ImportQueue, ImportRun
from shop.models import PriceChange, Product
from tests.imports.conftest import (
    browser,
    consumed_by,
    csv_file,
    import_via_admin,
    make_product,
    page_text,
    wait_run,
)
from tests.support.factories import make_staff

pytestmark = pytest.mark.workers


def test_an_import_applies_its_rows_in_chunks_on_the_users_queue(workers, fair_queues, app,
                                                                 settings):  # fmt: skip
    settings.IMPORTS_CHUNK_SIZE = 2
    user = make_staff("importer", "add_importrun", "view_importrun")
    make_product("A-1", "10.00", 5)
    make_product("A-2", "20.00", 7)
    data = csv_file(
        "sku,price,stock,name",
        "A-1,12.50,,",  # price change
        "A-2,20.00,9,",  # stock only
        "N-1,3.00,1,Brand new",
        "N-2,oops,1,Bad price",  # refused at confirmation
        "N-3,4.00,2,Three",
    )
    client = browser(user)
    run = wait_run(import_via_admin(client, data))

    assert run.status == ImportRun.Status.COMPLETED_WITH_ERRORS
    assert run.queue == f"imports.user.{user.pk}"
    assert (run.total, run.succeeded, run.rows_total) == (2, 2, 5)
    assert (run.rows_created, run.rows_updated, run.rows_failed) == (2, 2, 1)
    assert Product.objects.get(sku="A-1").price == Decimal("12.50")
    assert Product.objects.get(sku="A-2").stock == 9
    assert Product.objects.get(sku="N-3").name == "Three"
    change = PriceChange.objects.get()  # as the refresh records them
    assert (change.product.sku, change.old_price, change.new_price) == ("A-1", 10, 12.5)

    # Every node of the imports pool consumes the user's queue; no other node does.
    imports_nodes = workers.nodes("imports")
    wait_for(lambda: all(run.queue in q for q in consumed_by(app, imports_nodes).values()),
             timeout=30, what="every imports node to consume the user queue")  # fmt: skip
    others = [n for p in workers.pools if p.name != "imports" for n in workers.nodes(p)]
    assert not any(run.queue in q for q in consumed_by(app, others).values())

    # The run page and the queues page show it.
    page = page_text(client.get(run.get_absolute_url()))
    assert run.queue in page and "5 in file: 2 new, 2 updated, 0 unchanged, 1 refused" in page
    staff = browser(make_staff("ops", "view_importqueue"))
    queues = page_text(staff.get(reverse("admin:imports_importqueue_changelist")))
    row = ImportQueue.objects.get(name=run.queue)
    assert f"{run.queue} One user's importer Active 0 {len(imports_nodes)}:" in queues
    assert row.consumers == sorted(imports_nodes)

    # The errors file: the requester may download it, others may not.
    url = reverse("admin:imports_importrun_errors", args=[run.pk])
    rows = list(csv.reader(io.StringIO(client.get(url).content.decode())))
    assert rows[0] == ["line", "sku", "error"]
    assert rows[1][:2] == ["5", "N-2"] and "'oops' is not a price" in rows[1][2]
    assert browser(make_staff("other", "view_importrun")).get(url).status_code == 403
    boss = browser(make_staff("boss", "view_importrun", "view_all_imports"))
    assert boss.get(url).status_code == 200
