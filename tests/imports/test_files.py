"""Bad files and bad rows get clear errors and change nothing; the dry run writes nothing;
only staff allowed to import may upload and confirm. No workers: nothing here publishes.
"""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from core.models import OutboxMessage
from imports.models import ImportQueue, ImportRun
from imports.storage import imports_root
from shop.models import PriceChange, Product
from tests.imports.conftest import (
    CONFIRM_URL,
    IMPORT_URL,
    browser,
    confirm,
    confirm_fields,
    csv_file,
    make_product,
    page_text,
    token,
    upload,
)
from tests.support.factories import make_staff


def nothing_changed(before: list[tuple]) -> bool:
    after = list(Product.objects.order_by("sku").values_list("sku", "price", "stock", "name"))
    return (
        after == before
        and not ImportRun.objects.exists()
        and not PriceChange.objects.exists()
        and not OutboxMessage.objects.exists()
        and not ImportQueue.objects.exists()
    )


@pytest.fixture
def shop(db) -> list[tuple]:
    make_product("A-1", "10.00", 5)
    make_product("A-2", "20.00", 7)
    return list(Product.objects.order_by("sku").values_list("sku", "price", "stock", "name"))


BAD_FILES = {
    "latin-1": (
        "sku,name\nA-1,Caf\xe9 cr\xe8me\n".encode("latin-1"),
        "The file is not UTF-8 text: byte 0xe9 on line 2",
    ),
    "no sku column": (csv_file("name,price", "Widget,1.00"), "The file has no sku column"),
    "unknown column": (csv_file("sku,prize", "A-1,1.00"), "Unknown column(s): prize"),
    "duplicate skus": (
        csv_file("sku,price", "A-1,1.00", "A-2,2.00", "A-1,3.00"),
        "Each SKU may appear once, so that it is clear which row wins: 'A-1' on lines 2, 4",
    ),
    "formula injection": (
        csv_file("sku,name,price", 'A-1,=HYPERLINK("http://x"),1.00', "A-2,@SUM(A1),-2"),
        "a spreadsheet opening the data later would run them as formulas (CSV injection)",
    ),
    "ragged row": (csv_file("sku,price", "A-1,1.00,extra"), "Line 2 has 3 cells"),
    "header only": (csv_file("sku,price"), "The file has a header line but no rows to import"),
    "binary": (b"PK\x03\x04\x00\x00binary", "This is not a text file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_gets_a_clear_error_and_changes_nothing(shop, importer, case):
    data, expected = BAD_FILES[case]
    client = browser(importer)
    page = upload(client, data)
    text = page_text(page)
    assert page.status_code == 200
    assert expected in text
    assert 'name="confirm"' not in text  # nothing to confirm
    if case == "formula injection":
        assert "line 3, column name: '@SUM(A1)'" in text  # "-2" is a number: not listed
        assert "column price" not in text
    assert nothing_changed(shop)


def test_a_2_gb_upload_is_refused_by_its_size_before_a_byte_is_read(shop, importer):
    client = browser(importer)
    # The body is small; the declared length is what a 2 GB upload declares. The handler
    # refuses from the length: if it read the body it would find a valid small file.
    page = upload_declaring(client, csv_file("sku,price", "A-1,1.00"), 2 * 1024**3)
    text = page_text(page)
    assert "The file is 2.0 GB; at most 20.0 MB can be imported at once" in text
    assert "Nothing was read or saved." in text
    assert not (imports_root() / "pending").exists()
    assert nothing_changed(shop)


def upload_declaring(client, data: bytes, length: int):
    """An upload whose Content-Length says `length`, as a client about to send that much."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

    file = SimpleUploadedFile("huge.csv", data, content_type="text/csv")
    # In the order a browser sends them: the CSRF token comes first in the form.
    form = {"csrfmiddlewaretoken": token(client), "resource": "0", "import_file": file,
            "format": "0"}  # fmt: skip
    body = encode_multipart(BOUNDARY, form)
    # A real server hands the view a stream that ends where the bytes end.
    stream = {"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(length)}
    return client.generic("POST", IMPORT_URL, body, content_type=MULTIPART_CONTENT, **stream)


@override_settings(IMPORTS_MAX_UPLOAD_BYTES=100)
def test_a_file_over_the_limit_is_refused(shop, importer):
    page = upload(browser(importer), csv_file("sku,name", *[f"B-{i},x" for i in range(30)]))
    assert "at most 100 bytes can be imported at once" in page_text(page)
    assert nothing_changed(shop)


def test_the_dry_run_shows_what_would_change_and_changes_nothing(shop, importer):
    data = csv_file("sku,price,stock,name", "A-1,12.50,,", "A-2,20.00,7,", "N-1,3.00,1,Brand new")
    page = upload(browser(importer), data)
    html_text, text = page.content.decode(), page_text(page)
    assert page.status_code == 200 and 'name="confirm"' in html_text
    # django-import-export's preview: one row per line, with what it would do.
    assert html_text.count('class="update"') == 1 and html_text.count('class="new"') == 1
    assert html_text.count('class="skip"') == 1  # A-2 is unchanged
    assert "New N-1 3.00 EUR 1 Brand new" in text and "Skipped A-2 20.00 EUR 7" in text
    assert nothing_changed(shop)
    assert len(list((imports_root() / "pending").iterdir())) == 1  # kept for Confirm


def test_bad_rows_are_listed_and_the_others_can_still_be_confirmed(shop, importer):
    data = csv_file(
        "sku,price,stock,currency,name",
        "A-1,abc,1,EUR,",  # not a number
        "A-2,-4.00,1,EUR,",  # negative price: "-4.00" is a number, so no formula
        "A-3,1.00,1,EURO,",  # a new SKU without a name, and a bad currency
        "A-4,1.005,2,EUR,Four",  # three decimals
        "A-5,5.00,x,EUR,Five",  # stock not an integer
        "OK-1,2.00,3,USD,Fine",
    )
    client = browser(importer)
    page = upload(client, data)
    text = page_text(page)
    assert "Some rows failed to validate" in text
    assert "A price cannot be negative." in text
    assert "A currency is three capital letters (ISO 4217), e.g. EUR." in text
    assert "A new product needs a name." in text
    assert "Ensure that there are no more than 2 decimal places." in text
    assert "'abc' is not a price: digits and a dot, e.g. 12.50." in text
    assert "'x' is not a whole number of items." in text
    assert "skipped and" in text and "listed in the run's error file" in text
    assert nothing_changed(shop)

    # Confirm (no workers in this test: the run waits for them, its rows are recorded)
    done = confirm(client, page)
    run = ImportRun.objects.get()
    assert done.request["PATH_INFO"] == run.get_absolute_url()
    assert run.rows_total == 6 and run.rows_failed == 5 and run.total == 1
    assert [r[1] for r in run.rejected_rows] == ["A-1", "A-2", "A-3", "A-4", "A-5"]
    assert Product.objects.filter(sku="OK-1").count() == 0  # not applied before a worker does


def test_confirming_twice_starts_one_run(shop, importer):
    client = browser(importer)
    page = upload(client, csv_file("sku,price", "A-1,11.00"))
    fields = confirm_fields(page)
    client.post(CONFIRM_URL, fields)
    again = client.post(CONFIRM_URL, fields, follow=True)
    assert "This upload was already confirmed or is gone; upload the file again." in (
        again.content.decode()
    )
    assert ImportRun.objects.count() == 1


def test_a_forged_upload_name_is_refused(shop, importer):
    client = browser(importer)
    form = {"import_file_name": "../../etc/passwd", "original_file_name": "x.csv",
            "format": "0", "resource": "0", "csrfmiddlewaretoken": token(client)}  # fmt: skip
    assert client.post(CONFIRM_URL, form).status_code == 400
    assert nothing_changed(shop)


def test_upload_and_confirm_need_the_import_permission(shop, importer):
    viewer = browser(make_staff("viewer", "view_importrun"))
    assert viewer.get(IMPORT_URL).status_code == 403
    # A forged upload and a forged confirm of someone else's upload start nothing.
    page = upload(browser(importer), csv_file("sku,price", "A-1,1.00"))
    fields = confirm_fields(page)
    viewer_with_token = viewer
    viewer_with_token.get(reverse_changelist())  # a CSRF cookie
    fields["csrfmiddlewaretoken"] = viewer_with_token.cookies["csrftoken"].value
    assert viewer_with_token.post(CONFIRM_URL, fields).status_code == 403
    assert nothing_changed(shop)
    changelist = viewer.get(reverse_changelist()).content.decode()
    assert IMPORT_URL not in changelist  # no Import button either
    assert IMPORT_URL in browser(importer).get(reverse_changelist()).content.decode()


def reverse_changelist() -> str:
    from django.urls import reverse

    return reverse("admin:imports_importrun_changelist")


# --- the command ------------------------------------------------------------------------
def command_error(*args: str) -> str:
    with pytest.raises(CommandError) as excinfo:
        call_command("import_catalogue", *args)
    return str(excinfo.value)


def test_the_command_refuses_a_2_gb_file_unread_and_bad_options(shop, importer, tmp_path):
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as f:
        f.truncate(2 * 1024**3)  # sparse: 2 GB by its size, nothing on disk
    assert "The file is 2.0 GB; at most 20.0 MB can be imported at once" in command_error(
        str(huge), "--user", "importer"
    )
    missing = command_error(str(tmp_path / "nope.csv"), "--user", "importer")
    assert "No such file or directory. Nothing imported." in missing
    assert "No active user 'ghost'. Nothing imported." in command_error(
        str(huge), "--user", "ghost"
    )
    make_staff("clerk")  # staff without the import permission
    assert "User 'clerk' may not import" in command_error(str(huge), "--user", "clerk")
    assert nothing_changed(shop)


def test_the_command_explains_a_bad_file_and_dry_runs(shop, importer, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(csv_file("sku,price", "A-1,1", "A-1,2"))
    error = command_error(str(bad), "--user", "importer")
    assert "Each SKU may appear once" in error and "Nothing imported." in error

    good = tmp_path / "good.csv"
    good.write_bytes(csv_file("sku,price,name", "A-1,1.50,", "N-9,2.00,Nine", "A-2,x,"))
    call_command("import_catalogue", str(good), "--user", "importer", "--dry-run")
    out, err = capsys.readouterr()
    assert "good.csv: 1 new product, 1 update, 0 unchanged, 1 row with errors." in out
    assert "line 4 (A-2): price: 'x' is not a price" in err
    assert "Dry run: nothing changed." in out
    assert nothing_changed(shop)
    assert Product.objects.get(sku="A-1").price == Decimal("10.00")
