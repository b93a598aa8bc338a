"""Every address orders were placed with becomes a Customer, and its orders link to it.

Addresses are matched without regard to case (Ann@x.com and ann@x.com are one person).
Nobody gave marketing consent in the old data, so every customer starts opted out.
"""

from django.db import migrations

CHUNK = 2000


def forwards(apps, schema_editor):
    Customer = apps.get_model("shop", "Customer")
    Order = apps.get_model("shop", "Order")
    known = {c.email: c.pk for c in Customer.objects.all()}
    emails = {e.strip().lower() for e in Order.objects.values_list("customer_email", flat=True)}
    Customer.objects.bulk_create(
        [Customer(email=e) for e in sorted(emails - set(known)) if e], batch_size=CHUNK
    )
    known = dict(Customer.objects.values_list("email", "pk"))
    last = 0
    while True:
        orders = list(
            Order.objects.filter(pk__gt=last, customer__isnull=True).order_by("pk")[:CHUNK]
        )
        if not orders:
            break
        for order in orders:
            order.customer_id = known.get(order.customer_email.strip().lower())
        Order.objects.bulk_update(orders, ["customer"])
        last = orders[-1].pk


def backwards(apps, schema_editor):
    apps.get_model("shop", "Order").objects.update(customer=None)


class Migration(migrations.Migration):
    dependencies = [("shop", "0003_customers")]

    operations = [migrations.RunPython(forwards, backwards)]
