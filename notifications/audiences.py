"""Who a campaign goes to, as told by the domain apps that know people.

Notifications knows addresses, not customers: the shop registers an `Audience` (in its
AppConfig.ready()) that lists recipients as addresses with their marketing consent, read in
chunks so that a fan-out over 100,000 customers never holds them all in memory. Imports
flow one way: the shop imports this module, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipient:
    """One address of an audience. `key` orders the audience: the fan-out resumes after it."""

    key: int
    address: str
    name: str = ""
    opted_in: bool = True


@dataclass(frozen=True)
class Audience:
    """`recipients(active_within_days, after, limit)`: the next `limit` recipients whose key
    is above `after` (None: from the start), in key order, consent included.
    `opted_out(addresses)`: which of these no longer consent, checked again just before
    sending, so an opt-out between fan-out and send still counts.
    """

    identifier: str
    label: str
    recipients: Callable[[int | None, int | None, int], list[Recipient]]
    opted_out: Callable[[Iterable[str]], set[str]] | None = None


class UnknownAudience(LookupError):
    pass


_audiences: dict[str, Audience] = {}


def register(audience: Audience) -> Audience:
    _audiences[audience.identifier] = audience
    return audience


def get(identifier: str) -> Audience:
    try:
        return _audiences[identifier]
    except KeyError:
        known = ", ".join(sorted(_audiences)) or "none registered"
        raise UnknownAudience(f"unknown audience {identifier!r} (known: {known})") from None


def choices() -> list[tuple[str, str]]:
    return [(a.identifier, a.label) for a in sorted(_audiences.values(), key=lambda a: a.label)]
