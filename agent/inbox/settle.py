"""Settle: decide when each watched file is complete, and what is wrong with the ones that never will be."""

from __future__ import annotations

import logging
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.inbox.hold import Hold
from agent.qonto.limits import MAX_FILE_BYTES

log = logging.getLogger(__name__)

TRAILER_WINDOW = 2048  # `%%EOF` must be within this many bytes of the end


@dataclass(frozen=True)
class Ready:
    """A complete file, ready to be claimed and sent."""

    path: Path
    size: int
    dropped_at: float  # wall clock when the agent first saw it


@dataclass(frozen=True)
class Refused:
    """A quiet file that can never be uploaded as it is: goes to error/ with a hint."""

    path: Path
    size: int
    code: str
    detail: str
    hint: str


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    quiet_since: float  # monotonic: when this (size, mtime) was first observed
    first_seen: float  # wall clock: when the agent first saw the file
    observations: int = 1
    verdict: str | None = None  # cached content check for this (size, mtime)
    hold_until: float = 0.0  # monotonic: not before (retry backoff, credentials pause)
    hold_reason: str = ""


@dataclass
class Settler:
    """Decides when each watched file is complete, and what is wrong with the ones that never will be."""

    settle_seconds: float
    incomplete_after_seconds: float = 3600.0
    files: dict[Path, _Seen] = field(default_factory=dict)

    def track(self, path: Path) -> None:
        if path not in self.files:
            try:
                st = path.lstat()
            except OSError:
                return
            self.files[path] = _Seen(st.st_size, st.st_mtime_ns, time.monotonic(), time.time())

    def hold(self, hold: Hold) -> None:
        """Keep a file (back in the inbox after an attempt, or paused) from being offered until the hold ends."""
        self.track(hold.path)
        seen = self.files.get(hold.path)
        if seen:
            seen.hold_until = hold.until
            seen.hold_reason = hold.reason
            if hold.first_seen is not None:
                seen.first_seen = min(seen.first_seen, hold.first_seen)

    def poll(self) -> tuple[list[Ready], list[Refused]]:
        """Look at every tracked file once; return those now ready and those refused."""
        ready: list[Ready] = []
        refused: list[Refused] = []
        now = time.monotonic()
        for path, seen in list(self.files.items()):
            if seen.hold_until > now:
                continue
            try:
                st = path.lstat()
            except OSError:  # deleted or moved away meanwhile: nothing to do
                self.files.pop(path)
                continue
            if stat.S_ISLNK(st.st_mode):
                self.files.pop(path)
                refused.append(Refused(path, 0, "symlink", "the file is a symbolic link",
                                       "Links are never followed out of the inbox: copy the file itself "
                                       "into the inbox instead of linking to it."))
                continue
            if not stat.S_ISREG(st.st_mode):
                self.files.pop(path)
                log.debug("ignoring %s: not a regular file", path.name)
                continue
            if (st.st_size, st.st_mtime_ns) != (seen.size, seen.mtime_ns):
                seen.size, seen.mtime_ns, seen.quiet_since = st.st_size, st.st_mtime_ns, now
                seen.observations, seen.verdict = 1, None
                continue
            seen.observations += 1
            if not self._quiet(seen, now):
                continue
            verdict = seen.verdict or self._check(path, seen.size)
            seen.verdict = verdict
            if verdict == "ok":
                self.files.pop(path)
                ready.append(Ready(path, seen.size, seen.first_seen))
            elif verdict == "incomplete":
                if time.time() - seen.first_seen >= self.incomplete_after_seconds:
                    self.files.pop(path)
                    refused.append(Refused(
                        path, seen.size, "incomplete",
                        f"the PDF never got its end marker (%%EOF) in {self.incomplete_after_seconds / 60:.0f} minutes",
                        "The file looks cut off (an interrupted scan or copy): scan or copy it again."))
            else:
                self.files.pop(path)
                refused.append(_refusal(path, seen.size, verdict))
        return ready, refused

    def _quiet(self, seen: _Seen, now: float) -> bool:
        if now - seen.quiet_since >= self.settle_seconds:
            return True
        # A file already old when first seen (start-up scan, `upload`) need not wait the full
        # settle time again: two identical looks and an mtime older than settle_seconds suffice.
        age = time.time() - seen.mtime_ns / 1e9
        return seen.observations >= 2 and now - seen.quiet_since >= min(0.5, self.settle_seconds) \
            and age >= self.settle_seconds

    @staticmethod
    def _check(path: Path, size: int) -> str:
        """'ok', 'incomplete' (PDF still missing its trailer) or the reason it can never go."""
        if size == 0:
            return "empty"
        if size > MAX_FILE_BYTES:
            return "too_large"
        if not path.name.lower().endswith(".pdf"):
            return "ok"
        try:
            with open(path, "rb") as fh:
                head = fh.read(5)
                fh.seek(max(0, size - TRAILER_WINDOW))
                tail = fh.read(TRAILER_WINDOW)
        except OSError as exc:
            return f"unreadable:{exc.strerror or exc}"
        if head != b"%PDF-":
            return "not_pdf"
        return "ok" if b"%%EOF" in tail else "incomplete"

    def settling(self) -> bool:
        """Some file may become ready soon (not held back, not waiting for a scanner to finish)."""
        now = time.monotonic()
        return any(seen.hold_until <= now and seen.verdict != "incomplete" for seen in self.files.values())

    def next_check(self) -> float | None:
        """Seconds until a tracked file may change state (None when nothing is tracked)."""
        if not self.files:
            return None
        now = time.monotonic()
        waits = []
        for seen in self.files.values():
            if seen.hold_until > now:
                waits.append(seen.hold_until - now)
            elif seen.verdict == "incomplete":
                waits.append(1.0)  # a slow scanner: look once a second, not on every tick
            else:
                waits.append(0.1)
        return max(0.05, min(waits))

    def pending(self) -> list[tuple[Path, float, str]]:
        """(path, first seen, why it waits) for `status`."""
        now = time.monotonic()
        out = []
        for path, seen in self.files.items():
            if seen.hold_until > now:
                reason = seen.hold_reason
            elif seen.verdict == "incomplete":
                reason = "waiting for the end of the PDF (%%EOF): a scan or copy still in progress"
            else:
                reason = "settling: waiting until the file stops changing"
            out.append((path, seen.first_seen, reason))
        return out


def _refusal(path: Path, size: int, verdict: str) -> Refused:
    if verdict == "empty":
        return Refused(path, size, "empty", "the file is empty (0 bytes)",
                       "The copy or scan did not finish: save the invoice again into the inbox.")
    if verdict == "too_large":
        return Refused(path, size, "too_large",
                       f"the file is {size / 1e6:.1f} MB; Qonto accepts at most 10 MB per invoice",
                       "Compress the PDF or scan at a lower resolution, then drop it into the inbox again.")
    if verdict == "not_pdf":
        return Refused(path, size, "not_pdf", "the file is named .pdf but its content is not a PDF",
                       "Export or print the document to a real PDF and drop that into the inbox.")
    reason = verdict.split(":", 1)[1] if ":" in verdict else verdict
    return Refused(path, size, "unreadable", f"the file could not be read ({reason})",
                   "Make the file readable by the user running qonto-agent, then move it back into the inbox.")

