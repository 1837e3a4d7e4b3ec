"""File-system helpers: writes a reader sees whole or not at all, and locks held while a process lives.

An atomic write goes to a hidden temporary beside the target, is fsynced, then renamed. The
temporary's name starts with a dot and ends in `.tmp-<12 hex>`, so no reader's pattern (`*.pdf`,
`*.json`) matches it and a sync can recognise, and remove, what a crash left behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import filelock

TEMP_NAME = re.compile(r"\..+\.tmp-[0-9a-f]{12}")


def temp_for(path: Path) -> Path:
    """A fresh temporary name beside `path` that `TEMP_NAME` recognises."""
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")


def commit(temp: Path, path: Path) -> None:
    """Make a fully written temporary visible under its final name: fsync, then rename."""
    with open(temp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(temp, path)


def write_bytes(path: Path, data: bytes, *, mode: int = 0o666) -> None:
    """Replace `path` with `data` atomically; `mode` 0o600 keeps a file to its owner."""
    temp = temp_for(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        commit(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_json(path: Path, data: Any, *, mode: int = 0o666) -> None:
    """`write_bytes` of indented UTF-8 JSON."""
    write_bytes(path, (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode("utf-8"), mode=mode)


def fsync_dir(folder: Path) -> None:
    """Make the renames in `folder` durable (a no-op where directories cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ProcessLock:
    """An exclusive OS lock on a file (flock, or msvcrt on Windows), held until released or until
    the process ends in any way: a lock left by a killed process is free again at once.

    Built on `filelock`, without its soft-lock fallback (a stale lock file would outlive a crash)
    and not tied to one thread (`run` takes it in one thread and gives it back in another).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = filelock.FileLock(path, thread_local=False, fallback_to_soft=False)

    def acquire(self, blocking: bool, timeout: float = -1) -> bool:
        """Take the lock (waiting for it when `blocking`, at most `timeout` s when that is not
        negative); False when it cannot be had."""
        try:
            self._lock.acquire(timeout=timeout, blocking=blocking)
        except (filelock.Timeout, OSError):
            return False
        return True

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()
