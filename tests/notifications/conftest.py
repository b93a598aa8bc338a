"""Notification fixtures: the session's SMTP sink, customers, campaigns, a sender's settings."""

from __future__ import annotations

import uuid

import pytest

from notifications.models import Campaign
from shop.models import Customer
from tests.support.smtp import SINK, smtp  # noqa: F401  (the sink fixture, and its env)


def unique_domain() -> str:
    """Addresses no other test (or a late retry from one) uses."""
    return f"{uuid.uuid4().hex[:8]}.example.com"


def make_customers(domain: str, opted_in: int, opted_out: int) -> list[Customer]:
    customers = [
        Customer(email=f"in{i}@{domain}", name=f"In {i}", marketing_opt_in=True)
        for i in range(opted_in)
    ] + [
        Customer(email=f"out{i}@{domain}", name=f"Out {i}", marketing_opt_in=False)
        for i in range(opted_out)
    ]
    Customer.objects.bulk_create(customers)
    return customers


def make_campaign(**fields) -> Campaign:
    return Campaign.objects.create(
        name=fields.pop("name", "Spring sale"),
        subject=fields.pop("subject", "Spring sale: 20% off"),
        body=fields.pop("body", "Everything is 20% off until Sunday."),
        audience=fields.pop("audience", "customers"),
        **fields,
    )


@pytest.fixture
def in_process_mail(settings):
    """This process sends to the session's sink (the workers already do)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = SINK.port
    return settings
