"""Folder-wide trouble: done/, error/ or the ledger refusing every write (read-only, full, no
permission) is no single file's fault, so uploads pause until writing works again, instead of
sending files that could not be filed or recorded. The reason is what `status` shows; a retry is
due after a pause that doubles while the trouble lasts, and the first write that works ends it."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from agent.base.errors import FolderError

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 5.0
LONGEST_RETRY_SECONDS = 60.0
FILING = ("done/", "error/")  # the folders a claimed file waits on; the ledger is the other one
LEDGER = "the ledger"


class FolderTrouble:
    """Which folders refuse writes now, why, and when filing is tried again (thread-safe: the
    upload threads report, the pipeline's thread reads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._reasons: dict[str, str] = {}
        self._pause = 0.0
        self._next_try = 0.0

    def failed(self, folder: str, exc: OSError) -> bool:
        """Record `exc` against `folder` if it is folder-wide; False when it is one file's trouble."""
        trouble = FolderError.of(folder, exc)
        if trouble is None:
            return False
        self.refused(folder, trouble)
        return True

    def refused(self, folder: str, trouble: FolderError) -> None:
        """`folder` refuses every write: uploads pause (said once) until it takes one again."""
        with self._lock:
            new = not self._reasons
            self._reasons[folder] = str(trouble)
            if new:
                self._pause = FIRST_RETRY_SECONDS
                self._next_try = self._clock() + self._pause
        if new:
            log.error("paused: %s. Files wait in the inbox; uploads are tried again in %.0f s and resume by "
                      "themselves once it works.", trouble, FIRST_RETRY_SECONDS)

    def worked(self, folder: str) -> bool:
        """A write into `folder` worked: its trouble is over. True when there was trouble."""
        with self._lock:
            ended = self._reasons.pop(folder, None)
        if ended:
            log.info("%s can be written again; resuming", folder)
        return ended is not None

    def clear(self) -> None:
        """Nothing is left to file, so no work waits on done/ or error/: with no claim there is no
        write to try them with, and a pause kept would hold new files forever. The ledger's trouble
        stays: the heartbeat tries a write to it every 5 s."""
        for folder in FILING:
            self.worked(folder)

    def reason(self) -> str | None:
        """What a person must fix, or None when every folder takes writes."""
        with self._lock:
            return "; ".join(self._reasons.values()) or None

    def next_try(self) -> float:
        """When (monotonic clock) filing is tried again."""
        with self._lock:
            return self._next_try

    def retry_due(self) -> bool:
        """True once the pause is over; the next pause is then twice as long (up to a minute)."""
        with self._lock:
            if not self._reasons or self._clock() < self._next_try:
                return False
            self._pause = min(self._pause * 2, LONGEST_RETRY_SECONDS)
            self._next_try = self._clock() + self._pause
            return True
