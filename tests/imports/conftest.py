"""Helpers for the import tests: files, the admin's upload/confirm steps, waiting."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from core.waiting import wait_for
from imports import fair, storage
from imports.models import ImportQueue, ImportRun
from shop.models import Product
from tests.support.factories import make_staff

IMPORT_URL = reverse("admin:imports_importrun_import")
CONFIRM_URL = reverse("admin:imports_importrun_process_import")
IMPORTER = ("add_importrun", "view_importrun")


def csv_file(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def catalogue(count: int, start: int = 1, price: str = "9.99") -> bytes:
    """`count` rows of new products NEW-<n>."""
    rows = [f"NEW-{i:05d},Product {i},{price},{i % 50}" for i in range(start, start + count)]
    return csv_file("sku,name,price,stock", *rows)


def make_product(sku: str, price: str = "10.00", stock: int = 5, name: str = "") -> Product:
    return Product.objects.create(sku=sku, name=name or f"Product {sku}", price=Decimal(price),
                                  stock=stock)  # fmt: skip


def browser(user: User) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def token(client: Client, url: str = IMPORT_URL) -> str:
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    assert match
    return match.group(1).decode()


def upload(client: Client, data: bytes, name: str = "prices.csv", **extra: str):
    """Step 1: upload; the page shows errors, or the preview with a Confirm form."""
    file = SimpleUploadedFile(name, data, content_type="text/csv")
    # In the order a browser sends them: the CSRF token comes first in the form.
    form = {"csrfmiddlewaretoken": token(client), "resource": "0", "import_file": file,
            "format": "0"}  # fmt: skip
    return client.post(IMPORT_URL, form, **extra)


def confirm_fields(page) -> dict[str, str]:
    html = page.content.decode()
    assert 'name="confirm"' in html, "no Confirm button on the page"
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))


def confirm(client: Client, page):
    """Step 2: Confirm, as the button on the preview does."""
    return client.post(CONFIRM_URL, confirm_fields(page), follow=True)


def import_via_admin(client: Client, data: bytes, name: str = "prices.csv") -> ImportRun:
    page = upload(client, data, name)
    assert page.status_code == 200
    done = confirm(client, page)
    assert done.status_code == 200, done.content[:2000]
    return ImportRun.objects.latest("pk")


def wait_run(run: ImportRun, timeout: float = 90) -> ImportRun:
    def finished() -> bool:
        run.refresh_from_db()
        return run.is_finished

    wait_for(finished, timeout=timeout, interval=0.2, what=f"{run} to finish")
    return run


@pytest.fixture
def importer(db) -> User:
    return make_staff("importer", *IMPORTER)


@pytest.fixture(autouse=True)
def _private_storage() -> Iterator[None]:
    storage.remove_all()
    yield
    storage.remove_all()


@pytest.fixture
def fair_queues(workers, app) -> Iterator[None]:
    """Leave no user queue behind: nodes stop consuming what the test made, queues go."""
    yield
    names = list(ImportQueue.objects.values_list("name", flat=True))
    ImportQueue.objects.all().delete()
    fair.queues_sync(app=app)
    for name in names:
        fair.broker_delete(name, app)


def consumed_by(app, nodes: list[str]) -> dict[str, set[str]]:
    replies = app.control.inspect(destination=nodes, limit=len(nodes), timeout=5).active_queues()
    return {node: {q["name"] for q in queues} for node, queues in (replies or {}).items()}


def page_text(page) -> str:
    """What a person reads on the page: tags stripped, entities decoded, spaces collapsed."""
    import html

    text = re.sub(r"<[^>]+>", " ", page.content.decode())
    return re.sub(r"\s+", " ", html.unescape(text).replace("\xa0", " "))
