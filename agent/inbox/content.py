"""Is this file a whole PDF, JPEG or PNG? Judged by its structure, never by bytes at fixed offsets.

Real files arrive with bytes before `%PDF-` (a BOM, a mail header), padding after the end marker
(tens of KB of NULs from billing software), or no final marker at all; files still being written
arrive preallocated and full of zeros, page by page, or as a linearized first page whose early
end marker looks final. The rules, and why:

- PDF: `%PDF-` within the first 1024 bytes (what readers accept). The last `%%EOF` is looked for
  in a wide tail (`TAIL_BYTES`); after it only padding or junk may follow; bytes that start another
  object mean an update still being appended. The `startxref` before it must point at a cross-
  reference table or stream (at its offset, or shifted by the bytes before `%PDF-`). A linearized
  file must be as long as it says (`/L`) and its last end marker must lie past its first page
  (`/E`). A file whose `startxref` is sound but whose final `%%EOF` is missing is whole.
- JPEG: marker segments and scans are walked from the start to the end marker `FF D9` (an Exif
  thumbnail's own end marker inside a cut-off photo does not count; bytes after the end marker,
  padding or a phone's motion video, do not matter).
- PNG: its `IEND` chunk is in the tail (bytes after it do not matter).
- A head of zeros is a file still being written (preallocate-then-fill copies), never "not a PDF".
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass

from agent.qonto.limits import MAX_FILE_BYTES

HEAD_BYTES = 1024  # readers accept `%PDF-` anywhere in the first 1024 bytes
TAIL_BYTES = 256 * 1024  # wide enough for the padding real producers put after `%%EOF`
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_OBJECT_START = re.compile(rb"(?:^|\s)\d{1,10}\s+\d{1,5}\s+obj\b|(?:^|[\r\n])[ \t]*(?:xref|trailer|startxref)\b")
_PARTIAL_OBJECT = re.compile(rb"[\r\n]*\d{1,10}(?:\s+(?:\d{1,5}(?:\s+(?:ob?)?)?)?)?")  # `12 0 o` cut short
_XREF_TARGET = re.compile(rb"\s*(?:xref\b|\d{1,10}\s+\d{1,5}\s+obj\b)")
_STARTXREF = re.compile(rb"startxref\s+(\d{1,12})\s*$")
_LINEARIZED = re.compile(rb"/Linearized\s")
_LIN_LENGTH = re.compile(rb"/L\s+(\d{1,12})")
_LIN_FIRST_PAGE_END = re.compile(rb"/E\s+(\d{1,12})")


class Kind(enum.StrEnum):
    PDF = "pdf"
    JPEG = "jpeg"
    PNG = "png"

    @property
    def content_type(self) -> str:
        return {"pdf": "application/pdf", "jpeg": "image/jpeg", "png": "image/png"}[self.value]


class State(enum.StrEnum):
    COMPLETE = "complete"
    WRITING = "writing"  # looks like a file still being written, or one cut off
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    NOT_SUPPORTED = "not_supported"  # content is none of PDF, JPEG, PNG


@dataclass(frozen=True)
class Judgement:
    state: State
    kind: Kind | None = None
    why: str = ""  # for the debug log: which rule decided


def judge(fd: int, size: int) -> Judgement:
    """Judge the `size` bytes readable from the open file `fd` (positioned reads: the offset is untouched)."""
    if size == 0:
        return Judgement(State.EMPTY)
    if size > MAX_FILE_BYTES:
        return Judgement(State.TOO_LARGE)
    head = os.pread(fd, min(size, 4 * HEAD_BYTES), 0)
    if any(len(head) < len(sig) and sig.startswith(head) for sig in (b"%PDF-", b"\xff\xd8\xff", PNG_SIGNATURE)):
        return Judgement(State.WRITING, None, "only the start of a signature has arrived")
    start = head.find(b"%PDF-", 0, HEAD_BYTES + 5)
    if start >= 0:
        return _pdf(fd, size, head, start)
    if head.startswith(b"\xff\xd8\xff"):
        return _jpeg(fd, size)
    if head.startswith(PNG_SIGNATURE):
        tail_at = max(0, size - TAIL_BYTES)
        whole = os.pread(fd, size - tail_at, tail_at).rfind(PNG_END) >= 0  # bytes after it do not matter
        return Judgement(State.COMPLETE if whole else State.WRITING, Kind.PNG, "whole" if whole else "cut")
    if head[:1] == b"\0":
        return Judgement(State.WRITING, None, "starts with zeros: a copy that has not written its start yet")
    return Judgement(State.NOT_SUPPORTED, None, "neither a PDF, a JPEG nor a PNG")


def _pdf(fd: int, size: int, head: bytes, start: int) -> Judgement:
    tail_at = max(0, size - TAIL_BYTES)
    tail = os.pread(fd, size - tail_at, tail_at)
    eof = tail.rfind(b"%%EOF")
    final = _STARTXREF.search(tail.rstrip(b"\0 \t\r\n\f")[-64:])
    if final and eof >= 0 and tail.rfind(b"startxref") > eof and _xref_at(fd, size, int(final.group(1)), start):
        eof = -1  # a sound startxref after the last end marker ends the file: whole, without its final marker
    if eof >= 0:
        after = tail[eof + 5:]
        if _OBJECT_START.search(after) or _PARTIAL_OBJECT.fullmatch(after):
            return Judgement(State.WRITING, Kind.PDF, "an update is still being appended after the end marker")
        body, end_at = tail[:eof], tail_at + eof
    else:
        body, end_at = tail, size
    found = _STARTXREF.search(body.rstrip(b"\0 \t\r\n\f")[-64:])
    if not found or not _xref_at(fd, size, int(found.group(1)), start):
        return Judgement(State.WRITING, Kind.PDF, "no sound cross-reference before the end: cut off or in progress")
    if _LINEARIZED.search(head):
        length = _LIN_LENGTH.search(head)
        first_page_end = _LIN_FIRST_PAGE_END.search(head)
        if length and int(length.group(1)) + start > size:
            return Judgement(State.WRITING, Kind.PDF, "shorter than its linearized length")
        if first_page_end and end_at < int(first_page_end.group(1)):
            return Judgement(State.WRITING, Kind.PDF, "only the linearized first page has arrived")
    return Judgement(State.COMPLETE, Kind.PDF, "whole" if eof >= 0 else "whole, without a final end marker")


def _xref_at(fd: int, size: int, offset: int, start: int) -> bool:
    """True when a cross-reference table or stream begins at `offset` (or shifted by a prefix).

    Exactly there: a pointer cut short (`startxref 26` of 2648) must not pass for a sloppy one, so a
    producer that miscounts waits, then goes to error/ with a hint to print it to a new PDF.
    """
    for at in {offset, offset + start}:
        if 0 < at < size and _XREF_TARGET.match(os.pread(fd, 48, at)):
            return True
    return False


def _jpeg(fd: int, size: int) -> Judgement:
    """Walk marker segments and scans to the end marker; bytes after it (padding, a phone's motion
    video) do not matter, a segment or scan running past the end of the file means it is cut."""
    at = 2
    while at + 2 <= size:
        marker = os.pread(fd, 4, at)
        if marker[0] != 0xFF:  # stray bytes between segments, as decoders forgive: find the next marker
            found = os.pread(fd, 1 << 16, at).find(b"\xff")
            if found < 0:
                break
            at += found
            continue
        code = marker[1]
        if code == 0xD9:
            return Judgement(State.COMPLETE, Kind.JPEG, "whole")
        if code == 0xFF:  # fill byte
            at += 1
        elif code == 0xD8 or 0xD0 <= code <= 0xD7 or code == 0x01:
            at += 2
        elif len(marker) < 4:
            break
        else:
            at += 2 + int.from_bytes(marker[2:4], "big")
            if code == 0xDA:  # start of scan: entropy-coded data runs to the next marker
                at = _scan_end(fd, size, at)
    return Judgement(State.WRITING, Kind.JPEG, "the image data has not all arrived yet")


def _scan_end(fd: int, size: int, at: int) -> int:
    """Where the entropy-coded data starting at `at` ends: the next FF not followed by 00 or a restart."""
    while at < size:
        chunk = os.pread(fd, 1 << 16, at)
        index = chunk.find(b"\xff")
        while 0 <= index < len(chunk) - 1:
            follower = chunk[index + 1]
            if follower != 0 and not 0xD0 <= follower <= 0xD7:
                return at + index
            index = chunk.find(b"\xff", index + 2)
        if index == len(chunk) - 1 and index > 0:
            at += index  # an FF at the chunk's end: read again from it
        else:
            at += max(1, len(chunk))
    return size
