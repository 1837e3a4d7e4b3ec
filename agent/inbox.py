"""The inbox: watch → settle → batch.

Events are hints, never the truth: the watchdog observer only tells us *where to look*; the scan
at start and the periodic rescan find what events missed. A file is handed on only once it has
been quiet for `settle_seconds` and, for a PDF, is complete (`%PDF-` header, `%%EOF` trailer).
Nothing here uploads or moves files: it decides *when* a file is ready and *which* files travel
together.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import queue
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from agent.config import InboxConfig

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 10 * 1024 * 1024  # Qonto refuses larger files
MAX_REQUEST_BYTES = 15_000_000  # Qonto's request cap (an older page); leave room for multipart framing
PART_OVERHEAD = 1024  # bytes of multipart headers per item, counted against the request cap
ARCHIVE_DIRS = ("done", "error")
NETWORK_FS = {"nfs", "nfs4", "cifs", "smbfs", "smb3", "afs", "9p", "fuse.sshfs", "davfs", "fuse.davfs2",
              "ncpfs", "glusterfs", "ceph", "fuse.glusterfs", "fuse.rclone"}
_TEMP_SUFFIXES = (".part", ".crdownload", ".filepart", ".partial", ".tmp", ".download")
_LITTER = {".ds_store", "thumbs.db", "desktop.ini", "@eadir"}
TRAILER_WINDOW = 2048
WRITE_EVENTS = {"created", "modified", "moved", "closed"}  # "closed" is a close after writing  # `%%EOF` must be within this many bytes of the end


def is_ignored_name(name: str) -> bool:
    """Names never uploaded nor moved: hidden, office locks, temporaries, OS litter (DESIGN.md)."""
    lower = name.lower()
    return (
        lower.startswith((".", "~", "~$"))
        or lower.endswith(_TEMP_SUFFIXES)
        or lower in _LITTER
        or lower.startswith("._")
    )


@dataclass(frozen=True)
class Rules:
    """Which paths under the inbox are work: matching, not ignored, not in the archive."""

    root: Path
    patterns: tuple[str, ...]
    recursive: bool

    def wants(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return False
        parts = rel.parts
        if not parts or (len(parts) > 1 and not self.recursive):
            return False
        if parts[0] in ARCHIVE_DIRS or any(p.startswith(".") or p.lower() == "@eadir" for p in parts[:-1]):
            return False
        name = parts[-1]
        return not is_ignored_name(name) and any(fnmatch.fnmatch(name.lower(), p) for p in self.patterns)

    def prune(self, rel_dir: Path, name: str) -> bool:
        """True for a folder a scan must not enter: the archive and dot-folders (their size never costs CPU)."""
        return (rel_dir == Path(".") and name in ARCHIVE_DIRS) or name.startswith(".") or name.lower() == "@eadir"

    def scan(self) -> Iterator[Path]:
        """Every candidate file under the inbox, never entering the archive or following links."""
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                log.warning("cannot list %s (%s): check that the folder exists and is readable", folder, exc)
                continue
            rel_dir = folder.relative_to(self.root)
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if self.recursive and not self.prune(rel_dir, entry.name):
                        stack.append(Path(entry.path))
                elif self.wants(Path(entry.path)):
                    yield Path(entry.path)

    def listdir(self, path: str) -> Iterator[os.DirEntry]:
        """`os.scandir` for the polling observer, minus the archive and dot-folders."""
        rel_dir = Path(path).relative_to(self.root)
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False) and self.prune(rel_dir, entry.name):
                continue
            yield entry


def filesystem_type(path: Path) -> str | None:
    """The type of the mount holding `path` (Linux /proc/mounts), or None where unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target, best, best_len = str(path.resolve()), None, -1
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > best_len:
            best, best_len = fields[2], len(point)
    return best


def choose_mode(cfg: InboxConfig) -> tuple[str, str]:
    """('native' | 'polling', why): polling where OS events do not arrive (network mounts)."""
    if cfg.polling is True:
        return "polling", "polling = true in the configuration"
    if cfg.polling is False:
        return "native", "polling = false in the configuration"
    fstype = filesystem_type(cfg.path)
    if fstype in NETWORK_FS:
        return "polling", f"the inbox is on a {fstype} network mount, where file events do not arrive"
    return "native", f"the inbox is on a local {fstype or 'file system'}"


class _Hints(FileSystemEventHandler):
    """Turns every event into a path to look at; the settler decides what it means."""

    def __init__(self, sink: "queue.SimpleQueue[Path]", wake) -> None:
        self.sink = sink
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Opening or reading a file (our own settle check does) says nothing new about it.
        if event.event_type not in WRITE_EVENTS or (event.is_directory and event.event_type != "moved"):
            return
        for attr in ("src_path", "dest_path"):
            raw = getattr(event, attr, "")
            if raw:
                self.sink.put(Path(os.fsdecode(raw)))
        self.wake()


class Watcher:
    """A watchdog observer on the inbox that feeds hints; `scan()` finds what events missed."""

    def __init__(self, cfg: InboxConfig, wake) -> None:
        self.cfg = cfg
        self.rules = Rules(cfg.path, cfg.patterns, cfg.recursive)
        self.hints: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self.mode, self.why = choose_mode(cfg)
        self._wake = wake
        self.observer: BaseObserver | None = None

    def start(self) -> None:
        if self.mode == "polling":
            observer: BaseObserver = PollingObserverVFS(os.stat, self.rules.listdir,
                                                        polling_interval=self.cfg.poll_interval_seconds)
        else:
            observer = Observer()
        observer.schedule(_Hints(self.hints, self._wake), str(self.cfg.path), recursive=self.cfg.recursive)
        observer.daemon = True
        observer.start()
        self.observer = observer
        log.info("watching %s (%s: %s)", self.cfg.path, self.mode, self.why)

    def alive(self) -> bool:
        """False once the observer or its emitter died, or the inbox folder vanished (an unmounted share)."""
        observer = self.observer
        return (observer is not None and observer.is_alive() and all(e.is_alive() for e in observer.emitters)
                and self.cfg.path.is_dir())

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.unschedule_all()  # emitters first, so none is asked for events once stopped
            self.observer.stop()
            self.observer.join(5)

    def drain(self) -> Iterator[Path]:
        """The paths events pointed at since the last call, filtered by the rules."""
        while True:
            try:
                path = self.hints.get_nowait()
            except queue.Empty:
                return
            if self.rules.wants(path):
                yield path


# --- settle ---------------------------------------------------------------------------------------

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

    def hold(self, path: Path, seconds: float, reason: str, first_seen: float | None = None) -> None:
        """Keep a file (back in the inbox after a failed attempt) from being offered for `seconds`."""
        self.track(path)
        seen = self.files.get(path)
        if seen:
            seen.hold_until = time.monotonic() + seconds
            seen.hold_reason = reason
            if first_seen is not None:
                seen.first_seen = min(seen.first_seen, first_seen)

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


# --- batch ----------------------------------------------------------------------------------------

@dataclass
class Batcher:
    """Groups ready files: at most `batch_size` and under the request cap; debounced, with a cap on waiting."""

    batch_size: int
    debounce_seconds: float
    max_wait_seconds: float
    max_bytes: int = MAX_REQUEST_BYTES
    queue: list[Ready] = field(default_factory=list)
    _first: float = 0.0
    _last: float = 0.0

    def add(self, items: list[Ready]) -> None:
        if not items:
            return
        now = time.monotonic()
        if not self.queue:
            self._first = now
        self._last = now
        self.queue.extend(items)

    def take(self, flush: bool = False) -> list[list[Ready]]:
        """Batches due now: full ones at once; the rest after the debounce or the max wait."""
        batches: list[list[Ready]] = []
        while self.queue:
            batch, size = [], 0
            for item in self.queue:
                cost = item.size + PART_OVERHEAD
                if batch and (len(batch) >= self.batch_size or size + cost > self.max_bytes):
                    break
                batch.append(item)
                size += cost
            full = len(batch) < len(self.queue) or len(batch) >= self.batch_size
            now = time.monotonic()
            due = flush or full or now - self._last >= self.debounce_seconds \
                or now - self._first >= self.max_wait_seconds
            if not due:
                break
            batches.append(batch)
            del self.queue[: len(batch)]
        if self.queue and batches:
            self._first = time.monotonic()
        return batches

    def next_due(self) -> float | None:
        if not self.queue:
            return None
        now = time.monotonic()
        return max(0.0, min(self._last + self.debounce_seconds, self._first + self.max_wait_seconds) - now)
