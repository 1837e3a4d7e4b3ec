"""The bulk upload's multipart body, streamed from disk in the order Qonto groups its fields by."""

from __future__ import annotations

import bisect
import io
import itertools
import json
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Sequence
from urllib.parse import quote

from urllib3.fields import RequestField
from urllib3.filepost import encode_multipart_formdata

from agent.qonto.bulk import UploadItem

FILE_FIELD = "supplier_invoices[][file]"
KEY_FIELD = "supplier_invoices[][idempotency_key]"


def bulk_body(items: Sequence[UploadItem], source: str, meta: dict | None) -> tuple[MultipartStream, str]:
    """The multipart body, each item's file then key, item after item, then `source` and `meta`.

    Built by hand because the server groups `supplier_invoices[][x]` fields by order, and
    `requests` would put every `data=` field before every `files=` field. urllib3 encodes the
    framing around a placeholder per file; the files themselves are streamed from disk when sent.
    """
    fields: list[RequestField | tuple[str, str]] = []
    placeholders = []
    for index, item in enumerate(items):
        placeholder = f"\0qonto-agent-file-{index}-{secrets.token_hex(8)}\0".encode()
        placeholders.append(placeholder)
        fields += [file_field(item, placeholder), (KEY_FIELD, item.idempotency_key)]
    fields.append(("source", source))
    if meta is not None:
        fields.append(("meta", json.dumps(meta)))
    framing, content_type = encode_multipart_formdata(fields)
    segments: list[bytes | Path | BinaryIO] = []
    for item, placeholder in zip(items, placeholders):
        before, framing = framing.split(placeholder, 1)
        segments += [before, item.data if item.data is not None else item.path]
    segments.append(framing)
    return MultipartStream(segments), content_type


def file_field(item: UploadItem, data: bytes) -> RequestField:
    """The file part. urllib3 writes the name as browsers do (raw UTF-8, `"` as %22); a name that
    form would alter or that is not plain ASCII also gets an exact RFC 2231 `filename*`."""
    field = RequestField(FILE_FIELD, data, filename=item.filename)
    field.make_multipart(content_type=item.content_type)
    name = item.filename
    if not (name.isascii() and name.isprintable()) or any(c in name for c in '"%\\'):
        field.headers["Content-Disposition"] += f"; filename*=UTF-8''{quote(name, safe='')}"
    return field


class MultipartStream(io.RawIOBase):
    """A request body made of byte strings and files, read from disk as it is sent.

    Memory stays flat whatever the files' sizes. It has a length (for Content-Length) and can
    seek back to the start, which is how the transport rewinds a body to retry a request. Open files
    are read at the stream's position and never closed here: they belong to the caller.
    """

    def __init__(self, segments: list[bytes | Path | BinaryIO]) -> None:
        super().__init__()
        sizes = [_size(s) for s in segments]
        self._starts = list(itertools.accumulate(sizes, initial=0))  # segment i spans starts[i]:starts[i+1]
        self._segments = segments
        self._pos = 0
        self._open: tuple[int, BinaryIO] | None = None

    def __len__(self) -> int:
        return self._starts[-1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= len(self):
            return 0
        index = bisect.bisect_right(self._starts, self._pos) - 1
        offset, segment = self._pos - self._starts[index], self._segments[index]
        want = min(len(view), self._starts[index + 1] - self._pos)
        if isinstance(segment, bytes):
            view[:want] = segment[offset:offset + want]
            got = want
        elif isinstance(segment, Path):
            got = self._file(index, segment).readinto(view[:want]) if want else 0
        else:
            segment.seek(offset)
            got = segment.readinto(view[:want]) if want else 0
        if got == 0 and want:
            raise OSError(f"{getattr(segment, 'name', 'a file')} got shorter while it was being sent")
        self._pos += got
        return got

    def _file(self, index: int, path: Path) -> BinaryIO:
        """The open file of segment `index`, positioned where the stream is."""
        if self._open is None or self._open[0] != index:
            self._close_file()
            self._open = (index, open(path, "rb"))
        fh = self._open[1]
        if fh.tell() != self._pos - self._starts[index]:
            fh.seek(self._pos - self._starts[index])
        return fh

    def _close_file(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def close(self) -> None:
        self._close_file()
        super().close()


def _size(segment: bytes | Path | BinaryIO) -> int:
    if isinstance(segment, bytes):
        return len(segment)
    if isinstance(segment, Path):
        return segment.stat().st_size
    return os.fstat(segment.fileno()).st_size
