"""Numbers and durations as people read them, in the admin, commands and messages."""

from __future__ import annotations

from datetime import timedelta


def seconds(value: timedelta | None) -> str:
    """'18.7 s', '3 min 5 s', '5 min', '2 h', '-': durations as people read them."""
    if value is None:
        return "-"
    total = value.total_seconds()
    if total < 60:
        return f"{total:.1f} s"
    minutes, secs = divmod(round(total), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """'1 product', '3 products', '1,200 products'."""
    word = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count:,} {word}"
