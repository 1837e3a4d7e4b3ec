"""Multipart bodies read the way Rails (Rack) reads them, so the sandbox mis-pairs and renames
fields exactly where Qonto would."""

from __future__ import annotations

import email.parser
import email.policy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from urllib.parse import unquote

_ITEM_FIELD = re.compile(r"supplier_invoices\[\]\[([^\]]+)\]")
_FILENAME_PARAM = re.compile(r';\s*filename=(?:"((?:\\"|[^"])*)"|([^\s;"]+))', re.IGNORECASE)


@dataclass(frozen=True)
class FilePart:
    """A multipart part that came with a filename: an uploaded file."""

    filename: str
    data: bytes


def item_key(fields: dict[str, str | FilePart]) -> str | None:
    """A bulk item's idempotency key, or None when it has none."""
    key = fields.get("idempotency_key")
    return key.strip() if isinstance(key, str) and key.strip() else None


def parse_multipart(content_type: str, body: bytes) -> list[tuple[str, str | FilePart]]:
    """The fields of a multipart/form-data body, in arrival order.

    A part with a filename (see `_rack_filename`) becomes a `FilePart`, any other part a
    string; a part with an empty filename is skipped, as Rack does ("no file selected").
    Raises ValueError when the body is not multipart/form-data.
    """
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise ValueError("the body must be multipart/form-data with a boundary")
    headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP)
    boundary = headers.parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n").get_boundary()
    delimiter = b"--" + (boundary or "").encode("latin-1")
    start = body.find(delimiter)
    if not boundary or start < 0:
        raise ValueError("the multipart body has no part delimited by its boundary")
    # Split on the delimiter lines (fast on megabytes, unlike a full MIME parse); each chunk is
    # "\r\n<headers>\r\n\r\n<data>", and the closing delimiter's chunk starts with "--".
    chunks = body[start + len(delimiter):].split(b"\r\n" + delimiter)
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a multipart part has no blank line after its headers")
        part = headers.parsebytes(head.lstrip(b" \t").removeprefix(b"\r\n") + b"\r\n\r\n")
        parts.append((part, data))
    fields: list[tuple[str, str | FilePart]] = []
    for part, data in parts:
        disposition = part["content-disposition"]
        name = disposition.params.get("name") if disposition is not None else None
        if not name:
            continue
        filename = _rack_filename(part)
        if filename == "":
            continue
        value = FilePart(filename, data) if filename is not None else data.decode("utf-8", "replace")
        fields.append((name, value))
    return fields


def _rack_filename(part: Message) -> str | None:
    """A part's file name as Rack (Rails' request parser) reads it; None when it has none.

    Plain `filename="..."` (raw UTF-8 kept) wins over RFC 2231 `filename*=`. Like Rack, the
    name is percent-decoded when every `%` starts a valid escape (so urllib3's `%22` becomes
    `"` again), backslash escapes are removed unless a backslash precedes another character
    (a Windows path), and only the last path component is kept.
    """
    raw = next((str(value) for key, value in part.raw_items() if key.lower() == "content-disposition"), "")
    match = _FILENAME_PARAM.search(raw.encode("ascii", "surrogateescape").decode("utf-8", "replace"))
    if match is None:
        filename = part.get_filename()
        if filename is None:
            return None
    else:
        filename = match.group(1) if match.group(1) is not None else match.group(2)
        if all(re.fullmatch(r"%[0-9a-fA-F]{2}", escape) for escape in re.findall(r"%.?.?", filename)):
            filename = unquote(filename, errors="replace")
        if not re.search(r'\\[^\\"]', filename):
            filename = re.sub(r"\\(.)", r"\1", filename)
    components = re.split(r"[/\\]", filename)
    while len(components) > 1 and not components[-1]:
        components.pop()
    return components[-1]


def group_items(
    fields: Iterable[tuple[str, str | FilePart]],
) -> tuple[list[dict[str, str | FilePart]], dict[str, str | FilePart]]:
    """Group `supplier_invoices[][x]` fields into items the way Rails does; return (items, top-level).

    A field goes into the last item unless that item already has its key, in which case a new
    item starts. Sending all keys and then all files therefore mis-pairs them, as on Qonto.
    """
    items: list[dict[str, str | FilePart]] = []
    top: dict[str, str | FilePart] = {}
    for name, value in fields:
        match = _ITEM_FIELD.fullmatch(name)
        if match is None:
            top[name] = value
            continue
        key = match.group(1)
        if not items or key in items[-1]:
            items.append({})
        items[-1][key] = value
    return items, top

