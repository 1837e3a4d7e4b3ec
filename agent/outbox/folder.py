"""The outbox folder: atomic writes only, and only directly inside it."""

from __future__ import annotations

import csv
import io
import os
import stat
from pathlib import Path
from typing import Any, Mapping

from agent.base import files as atomic

class Outbox:
    """The outbox folder: atomic writes only, and only directly inside it.

    A temporary is `.<name>.tmp-<random>`: a dot-name that globs like `*.pdf` or `*.json` never
    match, in the same folder so the final rename is atomic.
    """

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()

    def path(self, name: str) -> Path:
        """The path of `name` in the outbox; refuses anything that would land elsewhere.

        Symlinks planted in the outbox are not followed: files are replaced by rename (which
        replaces a link, never writes through it) and measured with lstat.
        """
        path = self.root / name
        if (not name or name.startswith(".") or any(ch in name for ch in "/\\:\0")
                or path.parent != self.root or Path(os.path.abspath(path)).parent != self.root):
            raise ValueError(f"refusing to write {name!r}: it would not be a plain file inside the outbox")
        return path

    def temp_path(self, name: str) -> Path:
        return atomic.temp_for(self.path(name))

    def size(self, name: str) -> int | None:
        """The size of a complete file in the outbox, or None when there is none."""
        try:
            info = self.path(name).lstat()
        except FileNotFoundError:
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def exists(self, name: str) -> bool:
        return self.size(name) is not None

    def commit(self, temp: Path, name: str) -> None:
        atomic.commit(temp, self.path(name))

    def write_bytes(self, name: str, data: bytes) -> None:
        atomic.write_bytes(self.path(name), data)

    def write_json(self, name: str, data: Any) -> None:
        atomic.write_json(self.path(name), data)

    def write_csv(self, name: str, fields: tuple[str, ...], rows: list[Mapping[str, str]]) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        self.write_bytes(name, buffer.getvalue().encode("utf-8"))

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def clean_temporaries(self) -> int:
        """Delete what an interrupted sync left half-written (only our own temporary names)."""
        removed = 0
        for entry in os.scandir(self.root):
            if atomic.TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed

    def flush(self) -> None:
        """Make the renames durable before the ledger calls the window done."""
        atomic.fsync_dir(self.root)
