"""Report types: a base class and the registry of every module in `reports/types/`.

A type is one class in `reports/types/<identifier>.py` (pretix's exporter pattern):
identifier, label, a parameter form, how to split the work into parts, how to gather one
part, and how to render the combined data. Its queue `reports.<identifier>`, route and
worker pool follow from the module name (proj/topology.py); nothing else is edited by hand.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any, ClassVar

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder

from proj import topology

TYPES_PACKAGE = "reports.types"


class ReportType:
    """Base class of every report type. Subclasses live one per module in reports/types/."""

    identifier: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str] = ""
    form_class: ClassVar[type[forms.Form]]

    @property
    def queue(self) -> str:
        """Its own queue, derived like the topology derives it (never a literal)."""
        return topology.report_queue(self.identifier)

    @property
    def slots(self) -> int:
        """Parts of one run that its pool can gather at the same time."""
        return topology.report_slots(self.identifier)

    # --- parameters ---------------------------------------------------------------------
    def form(self, data: Mapping[str, Any] | None = None, **kwargs: Any) -> forms.Form:
        return self.form_class(data=data, **kwargs)

    def clean_params(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Validate raw input (admin POST, command options) into JSON-safe params.

        Raises InvalidParams carrying the bound form, so nothing is queued on bad input.
        """
        form = self.form(data)
        if not form.is_valid():
            raise InvalidParams(form)
        return json.loads(json.dumps(form.cleaned_data, cls=DjangoJSONEncoder))

    def parse_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Stored JSON params back to typed values, through the same form."""
        form = self.form(params)
        if not form.is_valid():
            raise ValueError(f"Stored parameters are no longer valid: {form.errors.as_text()}")
        return form.cleaned_data

    # --- work ---------------------------------------------------------------------------
    def plan(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Split the work into JSON-safe parts, gathered in parallel. At least one."""
        return [{}]

    def gather(self, params: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
        """Aggregate one part; returns JSON-safe data (Decimals as strings)."""
        raise NotImplementedError

    def combine(self, params: dict[str, Any], partials: list[dict[str, Any]]) -> Any:
        """Merge the partial aggregations into what the renderers need."""
        raise NotImplementedError

    def render_csv(self, params: dict[str, Any], data: Any) -> bytes:
        raise NotImplementedError

    def render_pdf(self, params: dict[str, Any], data: Any) -> bytes | None:
        """A PDF (with a chart where it helps), or None when the type has no PDF."""
        return None

    def describe(self, params: Mapping[str, Any]) -> str:
        """One line for titles and emails: the parameters in words."""
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in params.items())


class UnknownReportType(KeyError):
    pass


class InvalidParams(ValueError):
    """Bad report parameters; `form` holds the errors, field by field."""

    def __init__(self, form: forms.Form) -> None:
        self.form = form
        messages = []
        for field, errors in form.errors.items():
            where = "" if field == "__all__" else f"{field}: "
            messages += [f"{where}{e}" for e in errors]
        super().__init__("; ".join(messages))


_registry: dict[str, ReportType] = {}
_module_of: dict[str, str] = {}


def _load() -> None:
    """Import every module of reports/types (as the topology lists them) once."""
    if _registry:
        return
    for name in topology.report_identifiers():
        module = importlib.import_module(f"{TYPES_PACKAGE}.{name}")
        classes = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, ReportType)
            and obj is not ReportType
            and obj.__module__ == module.__name__
        ]
        if len(classes) != 1:
            raise ImportError(f"{module.__name__} must define exactly one ReportType subclass")
        instance = classes[0]()
        _registry[instance.identifier] = instance
        _module_of[instance.identifier] = name


def all_types() -> list[ReportType]:
    _load()
    return [_registry[k] for k in sorted(_registry)]


def get(identifier: str) -> ReportType:
    _load()
    try:
        return _registry[identifier]
    except KeyError:
        known = ", ".join(sorted(_registry))
        raise UnknownReportType(f"Unknown report type {identifier!r} (known: {known})") from None


def module_name(identifier: str) -> str:
    """The module a type was declared in: its queue is derived from that name."""
    _load()
    return _module_of[identifier]


def choices() -> list[tuple[str, str]]:
    return [(t.identifier, t.label) for t in all_types()]


# --- shared parameter forms and helpers -------------------------------------------------
class DateRangeForm(forms.Form):
    """From/to dates, inclusive. Empty means the last 7 full days, handy for cron."""

    # Option names for `manage.py run_report` (default: the field name with dashes).
    cli_names: ClassVar[dict[str, str]] = {"date_from": "from", "date_to": "to"}
    default_days: ClassVar[int] = 7
    # The default range ends yesterday (full days), or today where today's data matters.
    default_ends_today: ClassVar[bool] = False

    date_from = forms.DateField(
        required=False, label="From", help_text="First day (YYYY-MM-DD), included."
    )
    date_to = forms.DateField(
        required=False, label="To", help_text="Last day (YYYY-MM-DD), included. Default: yesterday."
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        last = date.today() if self.default_ends_today else date.today() - timedelta(days=1)
        date_to = cleaned.get("date_to") or last
        date_from = cleaned.get("date_from") or (date_to - timedelta(days=self.default_days - 1))
        if date_to < date_from:
            raise ValidationError(
                "The end date %(to)s is before the start date %(from)s.",
                code="end_before_start",
                params={"to": date_to, "from": date_from},
            )
        days = (date_to - date_from).days + 1
        limit = settings.REPORTS_MAX_RANGE_DAYS
        if days > limit:
            raise ValidationError(
                "The range covers %(days)d days; at most %(limit)d are allowed.",
                code="range_too_long",
                params={"days": days, "limit": limit},
            )
        cleaned["date_from"], cleaned["date_to"] = date_from, date_to
        return cleaned


def date_windows(start: date, end: date, days: int) -> list[dict[str, str]]:
    """[start, end] cut into windows of `days` days, as JSON-safe parts."""
    windows = []
    cursor = start
    while cursor <= end:
        last = min(end, cursor + timedelta(days=days - 1))
        windows.append({"from": cursor.isoformat(), "to": last.isoformat()})
        cursor = last + timedelta(days=1)
    return windows


def sized_windows(
    start: date, end: date, size: int, per_part: int, slots: int
) -> list[dict[str, str]]:
    """[start, end] in as many equal windows as pay for themselves: one per `per_part` of
    `size` (the rows the range holds), never more than the `slots` that run them at once.

    More parts than slots only queue behind each other, and a small part costs more in
    task, storage and merging than it saves: 53 weekly parts of a year took twice as long
    as one plain pass over the same rows (bench/reports.py --orders).
    """
    days = (end - start).days + 1
    parts = max(1, min(slots, days, -(-size // max(per_part, 1))))
    return date_windows(start, end, -(-days // parts))


DASH = "\u2013"  # an en dash, as in "1 Sep - 22 Nov 2026" typeset


def date_range_text(first: date, last: date) -> str:
    """'3 Mar 2026', '1-10 Mar 2026', '1 Sep - 22 Nov 2026', '11 Mar 2025 - 10 Mar 2026'
    (with en dashes): ranges as people write them, not two ISO dates."""
    if first == last:
        return f"{first.day} {first:%b %Y}"
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}{DASH}{last.day} {last:%b %Y}"
    if first.year == last.year:
        return f"{first.day} {first:%b} {DASH} {last.day} {last:%b %Y}"
    return f"{first.day} {first:%b %Y} {DASH} {last.day} {last:%b %Y}"
