"""An attachment's bytes, streamed to a file and kept only when they are exactly what Qonto announced.

Storage can send a short body (a truncated object), a long one, or one without end. The
attachment's `file_size` caps what is read, and the file counts only when its length equals
`file_size` and the answer's Content-Length: anything else is an error, and the caller removes
the partial file, so a short download never passes for a whole one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import requests

from agent.base.errors import TransientError
from agent.qonto.limits import MAX_DOWNLOAD_BYTES
from agent.qonto.transport import CHUNK, content_length

_LATER = "nothing was kept; it will be tried again later"


def announced_size(attachment: Mapping[str, object]) -> int | None:
    """The attachment's `file_size` (a string in Qonto's answers) in bytes, or None when unusable."""
    try:
        size = int(str(attachment.get("file_size")))
    except ValueError:
        return None
    return size if size >= 0 else None


def save_exact(response: requests.Response, dest: Path, size: int | None) -> str:
    """Write the body to `dest` and return its SHA-256, if it has exactly `size` bytes.

    Without a `size`, at most MAX_DOWNLOAD_BYTES are read. Raises TransientError for a body of
    another length; `dest` may then hold part of it.
    """
    cap = MAX_DOWNLOAD_BYTES if size is None else size
    announced = content_length(response)
    if announced is not None and size is not None and announced != size:
        raise TransientError(f"the attachment storage announced {announced} bytes for an attachment of "
                             f"{size} bytes: {_LATER}")
    if announced is not None and announced > cap:  # no size given: the general cap
        raise TransientError(f"the attachment storage announced {announced} bytes, more than the "
                             f"{cap // (1024 * 1024)} MB read at most: {_LATER}")
    digest = hashlib.sha256()
    got = 0
    with open(dest, "wb") as fh:
        for chunk in response.iter_content(CHUNK):
            got += len(chunk)
            if got > cap:
                raise TransientError(f"the attachment download went on past {cap} bytes: {_LATER}")
            digest.update(chunk)
            fh.write(chunk)
    expected = size if size is not None else announced
    if expected is not None and got != expected:
        raise TransientError(f"the attachment download ended after {got} of {expected} bytes: {_LATER}")
    return digest.hexdigest()
