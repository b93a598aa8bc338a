"""Template context every page may need."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def support(request: HttpRequest) -> dict[str, str]:
    """Whom to ask for a permission (the refusal page names them)."""
    return {"support_contact": settings.SHOP_SUPPORT_CONTACT}
