"""Names for the outbox, made from untrusted API objects: every path the outbox writes comes from here."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any, Mapping

MAX_STEM_BYTES = 150
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
_UNSAFE = re.compile(r"[^\w.\-]+")  # anything but letters, digits, `_`, `-` and `.`
_ID_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EXT_OK = re.compile(r"[a-z0-9]{1,8}")
CONTENT_TYPE_EXT = {
    "application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg", "image/jpg": "jpg",
    "image/gif": "gif", "image/webp": "webp", "image/tiff": "tiff", "image/heic": "heic",
    "application/xml": "xml", "text/xml": "xml",
}
DOCUMENT_EXTS = frozenset({*CONTENT_TYPE_EXT.values(), "jpeg", "tif", "txt", "csv", "odt", "ods", "docx", "xlsx"})


def safe_component(text: str) -> str:
    """A readable fragment of an untrusted string that is harmless in any file name on any OS.

    Keeps letters and digits of every script (NFC-normalised), turns everything else (path
    separators, control characters, spaces, Windows-forbidden marks) into single dashes, and
    leaves no `..`, no leading or trailing dot, dash or underscore. May return "".
    """
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(ch).startswith(("C", "Z")) else ch for ch in text)
    text = _UNSAFE.sub("-", text)
    text = re.sub(r"[-.]*\.[-.]*", ".", text)  # no `..`, no `-.` litter
    text = re.sub(r"-{2,}", "-", text)
    text = re.sub(r"_{2,}", "_", text)
    return text.strip(".-_ ")


def _cut_bytes(text: str, limit: int) -> str:
    """The longest prefix of `text` that is at most `limit` bytes in UTF-8 (whole characters)."""
    return text.encode("utf-8")[: max(0, limit)].decode("utf-8", errors="ignore")


def _id_part(invoice_id: str) -> str:
    """The invoice id as it is when it is a plain id (UUIDs are); otherwise a safe, unique form."""
    if _ID_OK.fullmatch(invoice_id):
        return invoice_id
    digest = hashlib.sha256(invoice_id.encode("utf-8")).hexdigest()[:16]
    return f"{_cut_bytes(safe_component(invoice_id), 40).rstrip('.-_')}-{digest}".lstrip("-")


def invoice_stem(invoice: Mapping[str, Any]) -> str:
    """`<created date>_<supplier file name without extension>_<invoice id>`, at most 150 bytes.

    The creation date and the file name never change once Qonto has the invoice, so the stem is
    stable even before the ledger remembers it (after a crash); the full id makes it unique.
    Only the file-name part is shortened when the whole would be too long.
    """
    id_part = _id_part(str(invoice.get("id") or ""))
    created = str(invoice.get("created_at") or "")[:10]
    date = created if _DATE.fullmatch(created) else ""
    base = _basename(invoice.get("file_name"))
    head, dot, ext = base.rpartition(".")
    if dot and head.strip(".") and _EXT_OK.fullmatch(ext.lower()):
        base = head
    # One byte is kept for the `_` that shields a stem Windows would take for a device.
    budget = MAX_STEM_BYTES - 1 - len(id_part) - 1 - (len(date) + 1 if date else 0)
    name = _cut_bytes(safe_component(base), budget).rstrip(".-_")
    stem = "_".join(part for part in (date, name, id_part) if part)
    return f"_{stem}" if _reserved(stem) else stem  # no date and "CON.x", or a bare id "CON"


def _basename(file_name: Any) -> str:
    """The last part of a name that may hold `/` or `\\` (an uploader's path, or an attack)."""
    return re.split(r"[/\\]", str(file_name or ""))[-1]


def _reserved(name: str) -> bool:
    """Windows takes `CON`, `nul.txt`, `COM1.anything` for devices, whatever follows the first dot."""
    return name.split(".")[0].upper() in _WINDOWS_RESERVED


def attachment_ext(attachment: Mapping[str, Any]) -> str:
    """The extension for an attachment file: from its content type, else its name, else `pdf`.

    Only document and image extensions pass: anything else (`exe`, `lnk`, `json`, which would
    collide with `<stem>.json`) becomes `bin`, so no outbox file opens as a program on a click.
    """
    content_type = str(attachment.get("file_content_type") or "").split(";")[0].strip().lower()
    if content_type in CONTENT_TYPE_EXT:
        return CONTENT_TYPE_EXT[content_type]
    name = _basename(attachment.get("file_name"))
    if "." not in name.strip("."):
        return "pdf"  # what Qonto stores when it says nothing
    suffix = name.rpartition(".")[2].lower()
    return suffix if suffix in DOCUMENT_EXTS else "bin"



def strip_urls(obj: Any) -> Any:
    """The attachment object without its pre-signed `url`s (they expire, and they are bearer links).

    `probative_attachment` carries one too, hence the recursion.
    """
    if isinstance(obj, dict):
        return {k: strip_urls(v) for k, v in obj.items() if k != "url"}
    if isinstance(obj, list):
        return [strip_urls(v) for v in obj]
    return obj

