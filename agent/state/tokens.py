"""The OAuth token file: rotated tokens kept between starts, beside the ledger, readable by its owner only.

The client decides what to keep and when (`agent.qonto.auth.TokenStore`); this only reads and
writes the file, atomically, so a crash never leaves half a token behind.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent.base import files as atomic


class FileTokenStore:
    """A `TokenStore` backed by one JSON file (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def load(self) -> dict | None:
        """The saved tokens, None when none were saved; OSError or ValueError when unreadable."""
        if not self.path.exists():
            return None
        saved = json.loads(self.path.read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            raise ValueError(f"{self.path} does not hold a JSON object")
        return saved

    def save(self, tokens: dict) -> None:
        """Replace the file with `tokens`, fsynced with its folder (raises OSError)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(self.path, json.dumps(tokens).encode(), mode=0o600)
        atomic.fsync_dir(self.path.parent)
