"""The supplier invoice list, one page at a time: the caller pulls pages and does its own per-page
work (counting, checking the list stayed still) between them, so no callback runs inside the client."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator

from agent.base.errors import RequestRejected
from agent.qonto import limits

log = logging.getLogger("agent.qonto")

SORT_BY = "updated_at:asc"
FALLBACK_SORT_BY = "created_at:asc"  # older API versions cannot sort by updated_at

FetchPage = Callable[[dict], dict]  # query parameters → the list endpoint's JSON answer


@dataclass(frozen=True)
class Page:
    """One page of the list: its invoices and its `meta` (current_page, next_page, total_count...)."""

    invoices: list[dict]
    meta: dict


class InvoiceList:
    """Follows `next_page` from page 1. A 400 on the first page is retried sorted by creation date:
    if that works, sorting by update date is what the server refused, so the fallback sticks."""

    def __init__(self, fetch: FetchPage) -> None:
        self._fetch = fetch
        self._sort_by = SORT_BY

    def pages(self, filters: dict[str, str]) -> Iterator[Page]:
        """Every page matching `filters`; the next one is requested only when the caller asks for it."""
        number: int | None = 1
        while number:
            answer = self._page(filters, number)
            meta = answer.get("meta") or {}
            yield Page(answer.get("supplier_invoices") or [], meta)
            next_page = meta.get("next_page")
            number = next_page if isinstance(next_page, int) and next_page > number else None

    def _page(self, filters: dict[str, str], number: int) -> dict:
        def fetch(sort_by: str) -> dict:
            return self._fetch({**filters, "page": number, "per_page": limits.PER_PAGE, "sort_by": sort_by})

        try:
            return fetch(self._sort_by)
        except RequestRejected as exc:
            if exc.status != 400 or number != 1 or self._sort_by == FALLBACK_SORT_BY:
                raise
        answer = fetch(FALLBACK_SORT_BY)
        self._sort_by = FALLBACK_SORT_BY
        log.info("Qonto refused sort_by=%s; listing with sort_by=%s from now on", SORT_BY, FALLBACK_SORT_BY)
        return answer
