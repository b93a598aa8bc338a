"""Admin template helpers: the operator's figures on the admin index."""

from __future__ import annotations

from django import template

register = template.Library()


@register.simple_tag
def open_dead_letters() -> list[tuple[str, int]]:
    from core.admin import open_dead_letters_per_queue

    return open_dead_letters_per_queue()
