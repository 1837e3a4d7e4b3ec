"""Streaming SHA-256 and the idempotency key derived from it.

The key must be the same for the same bytes on every machine and every version, forever: it is
what makes a resend after a crash land on the invoice already created. Never change NAMESPACE.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import BinaryIO

NAMESPACE = uuid.UUID("fb62e918-3a96-55e2-8dcb-d8aa14514dee")
CHUNK = 1 << 20  # 1 MiB: constant memory, few system calls


def sha256_stream(stream: BinaryIO, copy_to: BinaryIO | None = None) -> str:
    """Lowercase hex SHA-256 of everything left in `stream`, read in fixed-size chunks.

    With `copy_to`, the same chunks are written there: a snapshot whose bytes are exactly the
    ones hashed, whatever happens to the source afterwards.
    """
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n := stream.readinto(buf):
        digest.update(view[:n])
        if copy_to is not None:
            copy_to.write(view[:n])
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Lowercase hex SHA-256 of a file, without holding it in memory."""
    with open(path, "rb", buffering=0) as fh:
        return sha256_stream(fh)


def idempotency_key(sha256_hex: str) -> str:
    """uuid5 of the lowercase hex digest under NAMESPACE: same bytes, same key, everywhere."""
    return str(uuid.uuid5(NAMESPACE, sha256_hex.lower()))


def forced_key(sha256_hex: str, salt: str) -> str:
    """A key for `upload --force`: a deliberate second invoice must not replay the first one's key."""
    return str(uuid.uuid5(NAMESPACE, f"{sha256_hex.lower()}/forced/{salt}"))
