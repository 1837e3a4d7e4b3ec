"""The list endpoint's query, read and checked: filters, sort and page (`GET /v2/supplier_invoices`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from agent.qonto.limits import PER_PAGE

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_TIMESTAMP_FILTERS = ("updated_at", "created_at")
# The reference's sort fields, and `updated_at` that Qonto's sync guide sorts by.
SORTABLE = ("created_at", "updated_at", "file_name", "supplier_name", "payment_date", "due_date", "scheduled_date",
            "total_amount")
# What the list endpoint reads; anything else in the query is ignored (the request log shows it).
PARAMETERS = frozenset(
    [f"filter[{name}_{end}]" for name in _TIMESTAMP_FILTERS for end in ("from", "to")]
    + ["filter[status]", "filter[status][]", "sort_by", "page", "per_page"]
)


@dataclass(frozen=True)
class ListQuery:
    """The list endpoint's filters, sort and page, checked."""

    bounds: tuple[tuple[str, datetime | None, datetime | None], ...]  # (field, from, to)
    statuses: frozenset[str]
    sort_field: str
    descending: bool
    page: int
    per_page: int


class BadParameter(Exception):
    """A query parameter the list endpoint refuses; names it for the JSON:API error source."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail)
        self.parameter = parameter
        self.detail = detail


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time (offset required); raise ValueError otherwise."""
    if not _RFC3339.fullmatch(text):
        raise ValueError(f"{text!r} is not an RFC 3339 date-time such as 2026-01-01T00:00:00Z")
    return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))


def parse_list_query(query: dict[str, list[str]], *, sortable_updated_at: bool) -> ListQuery:
    """Read the list endpoint's query parameters; raise BadParameter on a bad one."""
    bounds = []
    for name in _TIMESTAMP_FILTERS:
        low, high = (_timestamp_parameter(query, f"filter[{name}_{end}]") for end in ("from", "to"))
        if low is not None or high is not None:
            bounds.append((name, low, high))
    statuses = frozenset(query.get("filter[status]", []) + query.get("filter[status][]", []))
    sort_field, descending = _parse_sort(query.get("sort_by", ["created_at:desc"])[-1], sortable_updated_at)
    page = _parse_int(query, "page", default=1, low=1, high=None)
    per_page = _parse_int(query, "per_page", default=1, low=1, high=PER_PAGE)
    return ListQuery(tuple(bounds), statuses, sort_field, descending, page, per_page)


def _timestamp_parameter(query: dict[str, list[str]], parameter: str) -> datetime | None:
    values = query.get(parameter)
    if not values or not values[-1]:
        return None
    try:
        return parse_rfc3339(values[-1])
    except ValueError as exc:
        raise BadParameter(parameter, str(exc)) from None


def sort_key(invoice: dict[str, Any], sort_field: str) -> tuple[int, Any]:
    """An invoice's place in a sort by `sort_field`: amounts by value, times as instants, dates and
    names as text. A null sorts after every value (first when descending), as PostgreSQL orders it."""
    value = invoice.get(sort_field)
    if sort_field == "total_amount":
        value = Decimal(value["value"]) if value and value.get("value") is not None else None
    elif sort_field in _TIMESTAMP_FILTERS:
        value = parse_rfc3339(value)
    return (1, 0) if value is None else (0, value)


def _parse_sort(value: str, sortable_updated_at: bool) -> tuple[str, bool]:
    sort_field, _, direction = value.partition(":")
    allowed = SORTABLE if sortable_updated_at else tuple(name for name in SORTABLE if name != "updated_at")
    if sort_field not in allowed or direction not in ("asc", "desc"):
        choices = ", ".join(f"{name}:asc|desc" for name in allowed)
        raise BadParameter("sort_by", f"sort_by {value!r} is not supported; use one of {choices}")
    return sort_field, direction == "desc"


def _parse_int(query: dict[str, list[str]], name: str, *, default: int, low: int, high: int | None) -> int:
    raw = query.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(name, f"{name} must be an integer, not {raw!r}") from None
    if value < low or (high is not None and value > high):
        limit = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadParameter(name, f"{name} must be {limit}, not {value}")
    return value

