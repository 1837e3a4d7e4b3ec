"""Bulk upload items and what became of each: Qonto's bulk answer mapped back to its items."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Literal, Sequence

from agent.base.errors import RequestRejected
from agent.qonto import limits
from agent.qonto.answers import error_words, pointers

_POINTER_KEY = re.compile(r"/idempotency_key/([^/]+)")
_POINTER_INDEX = re.compile(r"/supplier_invoices/(\d+)(?:/|$)")
WHOLE_REQUEST_CODES = frozenset({"limit_reached", "bad_request"})
_TRANSIENT_CODE = re.compile(r"internal|unavailable|timeout|timed_out|too_many|rate_limit|temporar|try_again")


@dataclass(frozen=True)
class UploadItem:
    """One file of a bulk upload; its bytes are read while the request is sent.

    With `data`, they come from that open file (positioned reads, so the bytes sent are the ones
    its owner checked and hashed); `path` then only names it in errors.
    """

    path: Path
    idempotency_key: str
    filename: str  # the name Qonto records: the original file name, unicode kept
    content_type: str = "application/pdf"
    data: BinaryIO | None = None


@dataclass(frozen=True)
class ItemResult:
    """What became of one item: "created" (with its invoice), "rejected" or "unknown" (with errors).

    "unknown" means the answer did not say for sure: resending with the same key is safe.
    """

    item: UploadItem
    outcome: Literal["created", "rejected", "unknown"]
    invoice: dict | None
    errors: tuple[dict, ...]


def check_batch(items: Sequence[UploadItem]) -> None:
    """Refuse a batch Qonto would refuse or could not map back: too many items, or a key sent twice."""
    if len(items) > limits.MAX_ITEMS:
        raise ValueError(f"{len(items)} items: Qonto takes at most {limits.MAX_ITEMS} per request")
    keys = Counter(item.idempotency_key for item in items)
    if repeated := [key for key, n in keys.items() if n > 1]:
        raise ValueError(f"idempotency keys sent twice in one batch: {', '.join(repeated)}")


def map_results(items: Sequence[UploadItem], answer: dict) -> list[ItemResult]:
    """Per-item outcomes from a bulk answer, so that nothing is marked sent that Qonto did not confirm.

    Qonto answers 200 with created invoices and per-item errors, which are mapped back so:
    1. an error whose pointer names an item (`/idempotency_key/<key>`, or its position as in
       `/supplier_invoices/0/file`) belongs to that item: "rejected", or "unknown" when its code
       looks transient (e.g. `internal_server_error`);
    2. the other items are matched to the returned invoices by `file_name` where that name
       is unique among both those items and those invoices;
    3. the rest are paired in order, but only when exactly as many invoices as items remain
       and no error lacked a pointer;
    4. errors naming no item belong to the one item left without an invoice, when only one is;
    5. anything else is "unknown", carrying the pointerless errors if there were any.
    "unknown" is safe to resend with the same key: Qonto returns the invoice it already made.
    """
    claimed: dict[int, list[dict]] = {}
    pointerless: list[dict] = []
    for error in _dicts(answer.get("errors")):
        named = named_items(items, pointers(error))
        (claimed.setdefault(named[0], []) if named else pointerless).append(_short_error(error))
    open_items = [i for i in range(len(items)) if i not in claimed]
    paired = pair_invoices(items, open_items, _dicts(answer.get("supplier_invoices")), in_order=not pointerless)
    left = [i for i in open_items if i not in paired]
    if pointerless and len(left) == 1:
        claimed[left[0]] = pointerless
    results: dict[int, ItemResult] = {
        i: ItemResult(items[i], "unknown" if any(_looks_transient(e) for e in errs) else "rejected", None,
                      tuple(errs))
        for i, errs in claimed.items()
    }
    for i, invoice in paired.items():
        results[i] = ItemResult(items[i], "created", invoice, ())
    unmatched = tuple(pointerless) or (
        {"code": "unmatched", "detail": "Qonto's answer did not say what became of this file"},)
    return [results.get(i) or ItemResult(item, "unknown", None, unmatched) for i, item in enumerate(items)]


def check_whole(answer: dict, redact: Callable[[Any], str | None]) -> None:
    """Raise RequestRejected for a 200 answer that refused the request as a whole, as a 400 would:
    no invoice, and an error with a whole-request code or naming the whole list (`/supplier_invoices`).
    Qonto's older material lists `limit_reached` among the item errors of a 200; its reference answers 400."""
    if _dicts(answer.get("supplier_invoices")):
        return
    for error in _dicts(answer.get("errors")):
        if error.get("code") in WHOLE_REQUEST_CODES or "/supplier_invoices" in pointers(error):
            words = redact(error_words(error))
            raise RequestRejected(f"Qonto refused the invoice upload as a whole; Qonto said: {words}", status=200,
                                  code=redact(error.get("code")), detail=words, pointers=tuple(pointers(error)))


def named_items(items: Sequence[UploadItem], refs: Sequence[str]) -> list[int]:
    """The positions of the items that JSON pointers name, by idempotency key or by position, in order."""
    index_of = {item.idempotency_key: i for i, item in enumerate(items)}
    named: list[int] = []
    for pointer in refs:
        by_key = _POINTER_KEY.search(pointer)
        by_index = _POINTER_INDEX.match(pointer)
        index = index_of.get(by_key.group(1)) if by_key else int(by_index.group(1)) if by_index else None
        if index is not None and index < len(items) and index not in named:
            named.append(index)
    return named


def after_refusal(count: int, named: list[int]) -> tuple[list[int], list[list[int]]]:
    """What to do with a batch of `count` items that Qonto refused as a whole (400 `limit_reached`,
    `required`, `bad_request` "Request is too large", or a proxy's 413), given the items it named:
    (positions refused for good, batches of positions to send again).

    The items named, or a lone item, are refused and the others sent again; a refusal that names
    none is halved. Each round sends fewer items, so none is lost and none is retried forever.
    """
    refused = named or ([0] if count == 1 else [])
    rest = [i for i in range(count) if i not in refused]
    halves = [rest] if refused else [rest[:count // 2], rest[count // 2:]]
    return refused, [part for part in halves if part]


def pair_invoices(
    items: Sequence[UploadItem], open_items: list[int], invoices: list[dict], *, in_order: bool
) -> dict[int, dict]:
    """Invoices to item indexes: by a file name unique on both sides, then in order if counts agree."""
    names = Counter(items[i].filename for i in open_items)
    invoice_names = Counter(invoice.get("file_name") for invoice in invoices)
    by_name = {items[i].filename: i for i in open_items}
    paired: dict[int, dict] = {}
    rest: list[dict] = []
    for invoice in invoices:
        name = invoice.get("file_name")
        if names[name] == 1 and invoice_names[name] == 1:
            paired[by_name[name]] = invoice
        else:
            rest.append(invoice)
    rest_items = [i for i in open_items if i not in paired]
    if in_order and len(rest_items) == len(rest):
        paired.update(zip(rest_items, rest))
    return paired


def _dicts(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _short_error(error: dict) -> dict:
    return {"code": str(error.get("code") or "unknown"), "detail": error_words(error) or ""}


def _looks_transient(error: dict) -> bool:
    return bool(_TRANSIENT_CODE.search(error["code"].lower()))
