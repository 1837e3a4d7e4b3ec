"""The watchdog observer: events are hints of where to look, never the truth."""

from __future__ import annotations

import logging
import os
import queue
from pathlib import Path
from typing import Iterator

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from agent.config import InboxConfig
from agent.inbox.mounts import choose_mode
from agent.inbox.rules import Rules

log = logging.getLogger(__name__)

WRITE_EVENTS = {"created", "modified", "moved", "closed"}  # "closed" is a close after writing
WRITER_EVENTS = {"opened", "modified", "closed", "closed_no_write"}  # native only: who holds the file open


class _Hints(FileSystemEventHandler):
    """Turns every event into a path to look at; the settler decides what it means.

    With native events, opens and closes (inotify's IN_OPEN, IN_CLOSE_WRITE, IN_CLOSE_NOWRITE) and
    writes (IN_MODIFY) are passed on with their kind, so the settler can tell that a writer still
    holds a file open: a scanner pausing between pages is not done. Polling observers only compare
    snapshots, so there events say nothing about writers.
    """

    def __init__(self, sink: "queue.SimpleQueue[tuple[Path, str | None]]", wake, native: bool) -> None:
        self.sink = sink
        self.wake = wake
        self.native = native

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Hints only: the settler looks for itself. Opens and closes count writers (native mode).
        kind: str | None = None
        if event.is_directory:
            if event.event_type != "moved":
                return
        elif self.native and event.event_type in WRITER_EVENTS:
            kind = event.event_type
        elif event.event_type not in WRITE_EVENTS:
            return
        for attr in ("src_path", "dest_path"):
            raw = getattr(event, attr, "")
            if raw:
                self.sink.put((Path(os.fsdecode(raw)), kind if attr == "src_path" else None))
        self.wake()


class Watcher:
    """A watchdog observer on the inbox that feeds hints; `scan()` finds what events missed."""

    def __init__(self, cfg: InboxConfig, wake) -> None:
        self.cfg = cfg
        self.rules = Rules(cfg.path, cfg.patterns, cfg.recursive)
        self.hints: queue.SimpleQueue[tuple[Path, str | None]] = queue.SimpleQueue()
        self.mode, self.why = choose_mode(cfg)
        self._wake = wake
        self.observer: BaseObserver | None = None

    def start(self) -> None:
        if self.mode == "polling":
            observer: BaseObserver = PollingObserverVFS(os.lstat, self.rules.listdir,
                                                        polling_interval=self.cfg.poll_interval_seconds)
        else:
            observer = Observer()
        hints = _Hints(self.hints, self._wake, native=self.mode == "native")
        observer.schedule(hints, str(self.cfg.path), recursive=self.cfg.recursive)
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

    def drain(self) -> Iterator[tuple[Path, str | None]]:
        """(path, what a writer did, natively) for each event since the last call; the pipeline sorts them."""
        while True:
            try:
                yield self.hints.get_nowait()
            except queue.Empty:
                return

