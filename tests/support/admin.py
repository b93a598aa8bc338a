"""Act in the admin as a browser does: CSRF token from the page, then the POST."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Model
from django.test import Client


def csrf_client(user: User) -> Client:
    """A browser-like client: CSRF enforced, logged in."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_token(client: Client, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    assert match, "no CSRF token on the page"
    return match.group(1).decode()


def post_action(client: Client, changelist: str, action: str, objects: Iterable[Model]) -> Any:
    """Select `objects` on a changelist and run `action`, following the redirect."""
    return client.post(
        changelist,
        {
            "action": action,
            "_selected_action": [o.pk for o in objects],
            "csrfmiddlewaretoken": csrf_token(client, changelist),
        },
        follow=True,
    )
