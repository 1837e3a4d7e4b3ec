"""`run` and `upload`: wire watcher, settler, batcher, uploader and the sync schedule together.

The inbox pipeline is one loop (watch → settle → batch → upload → file away) that sleeps on an
event when there is nothing to do, so an idle agent costs no CPU. `run` keeps it going in a worker
thread and syncs the outbox on a schedule; `upload` runs the same loop once over what is there.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agent import mirror
from agent.config import Config
from agent.base.errors import CredentialsError, PermissionDenied, QontoError
from agent.base.verdict import Verdict
from agent.filing import Filing
from agent.inbox import Batcher, Ready, Rules, Settler, Watcher
from agent.qonto.client import QontoClient
from agent.state import Ledger, Pending
from agent.uploader import Outcome, Uploader

log = logging.getLogger(__name__)

PAUSE_SECONDS = 60.0  # uploads wait this long after a 403 or a web page instead of the API
HEARTBEAT_SECONDS = 5.0
SHUTDOWN_GRACE_SECONDS = 8.0  # DESIGN.md: exit within 10 s of SIGTERM
SYNC_AFTER_UPLOAD_SECONDS = 10.0
UPLOADS_IN_FLIGHT = 2  # one batch's round trip overlaps the next one's, within Qonto's rate limits


@dataclass
class Totals:
    uploaded: int = 0
    duplicates: int = 0
    failed: int = 0
    paused: QontoError | None = None

    def add(self, outcome: Outcome) -> None:
        self.uploaded += len(outcome.uploaded)
        self.duplicates += len(outcome.duplicates)
        self.failed += len(outcome.failed)
        self.paused = outcome.paused or self.paused


@dataclass(frozen=True)
class PassSummary:
    """What one `upload` pass did, and how many files it left waiting for a later pass."""

    totals: Totals
    waiting: int

    @property
    def verdict(self) -> Verdict:
        if isinstance(self.totals.paused, (CredentialsError, PermissionDenied)):
            return Verdict.CREDENTIALS
        if self.totals.failed:
            return Verdict.FAILED
        return Verdict.LATER if self.waiting else Verdict.DONE


class RunEnd(enum.Enum):
    """Why `run` ended."""

    STOPPED = "stopped"  # a signal asked it to
    WATCHER_DIED = "watcher died"  # the service manager should start it again
    CRASHED = "crashed"  # an unexpected error; reported in the log
    ABANDONED = "abandoned"  # stopped, but a batch in flight did not finish in time


class Pipeline:
    """settle → batch → upload → file away, one tick at a time; knows nothing of signals.

    Up to UPLOADS_IN_FLIGHT batches travel at once, so one batch's round trip overlaps the next
    one's; their outcomes are applied here, on the caller's thread, where the settler lives.
    """

    def __init__(self, config: Config, client: QontoClient, ledger: Ledger, filing: Filing,
                 wake: Callable[[], None] | None = None) -> None:
        cfg = config.inbox
        self.config = config
        self.ledger = ledger
        self.filing = filing
        self.rules = Rules(cfg.path, cfg.patterns, cfg.recursive)
        self.settler = Settler(cfg.settle_seconds, cfg.incomplete_after_seconds)
        self.batcher = Batcher(cfg.batch_size, cfg.debounce_seconds, cfg.max_wait_seconds)
        self.client = client
        self.uploader = Uploader(config, client, ledger, filing)
        self.totals = Totals()
        self.forced: set[Path] = set()
        self._pause_until = 0.0
        self._pending_written: list[tuple[str, str]] | None = None
        self._wake = wake
        self._pool = ThreadPoolExecutor(UPLOADS_IN_FLIGHT, thread_name_prefix="upload")
        self._in_flight: dict[Future, list[Ready]] = {}

    def resume(self) -> None:
        """Files claimed by this process's dead predecessors are sent first, as they were ready."""
        adopted = self.filing.adopt_orphans()
        claims = self.filing.claims()
        if adopted:
            log.info("resuming %d file(s) left in progress by an agent that stopped", adopted)
        for start in range(0, len(claims), self.config.inbox.batch_size):
            self._account(self.uploader.send_claims(claims[start:start + self.config.inbox.batch_size]))

    def track(self, path: Path) -> None:
        self.settler.track(path)

    def scan(self) -> None:
        for path in self.rules.scan():
            self.settler.track(path)

    def tick(self, flush: bool = False) -> float | None:
        """Do what is due; return seconds until something may be due again (None: wait for events)."""
        self._collect()
        ready, refused = self.settler.poll()
        for item in refused:
            self.uploader.refuse(item)
            self.totals.failed += 1
        if ready and time.monotonic() < self._pause_until:
            self._hold(ready, self._pause_until - time.monotonic(), f"paused: {self.totals.paused}")
            ready = []
        self.batcher.add(ready)
        for batch in self.batcher.take(flush=flush):
            force = any(item.path in self.forced for item in batch)
            future = self._pool.submit(self.uploader.send, batch, force=force)
            self._in_flight[future] = batch
            if self._wake:
                future.add_done_callback(lambda _: self._wake())
        waits = [w for w in (self.settler.next_check(), self.batcher.next_due()) if w is not None]
        if self._in_flight and not self._wake:
            waits.append(0.05)
        return min(waits) if waits else None

    def idle(self) -> bool:
        """Nothing left that this pass could still send (held and incomplete files wait for later)."""
        return not self.batcher.queue and not self._in_flight and not self.settler.settling()

    def close(self) -> None:
        """Let the batches in flight finish and file their files away."""
        self._pool.shutdown(wait=True)
        self._collect()

    def _collect(self) -> None:
        for future in [f for f in self._in_flight if f.done()]:
            del self._in_flight[future]
            self._account(future.result())  # a bug in a worker ends the loop, as it would inline

    def _account(self, outcome: Outcome) -> None:
        self.totals.add(outcome)
        if outcome.paused is not None and time.monotonic() >= self._pause_until:
            # The client's brake on refused credentials says how long; other refusals (403, a web
            # page instead of the API) need a person too, so they wait as long as a first 401 would.
            pause = self.client.paused_for or PAUSE_SECONDS
            self._pause_until = time.monotonic() + pause
            log.error("paused: %s. Files stay in the inbox; next try in %.0f s.", outcome.paused, pause)
        for path, delay, why, dropped_at in outcome.retry:
            if outcome.paused is not None:
                delay = max(delay, self._pause_until - time.monotonic())
            self.settler.hold(path, delay, why, dropped_at)

    def _hold(self, items: list[Ready], seconds: float, why: str) -> None:
        for item in items:
            self.settler.hold(item.path, seconds, why, item.dropped_at)

    def publish_pending(self) -> None:
        """Tell `status` (another process) what waits and why; written only when it changed."""
        entries = sorted((str(p.relative_to(self.config.inbox.path)), since, why)
                         for p, since, why in self.settler.pending())
        entries += [(str(r.path.relative_to(self.config.inbox.path)), r.dropped_at, "queued for upload")
                    for r in self.batcher.queue]
        entries += [(str(r.path.relative_to(self.config.inbox.path)), r.dropped_at, "uploading")
                    for batch in list(self._in_flight.values()) for r in batch]
        key = [(f, why) for f, _, why in entries]
        if key != self._pending_written:
            self.ledger.set_pending(Pending(f, since, why) for f, since, why in entries)
            self._pending_written = key


class SyncSchedule(threading.Thread):
    """Syncs the outbox every `sync_interval_seconds`, and soon after uploads."""

    def __init__(self, config: Config, client: QontoClient, ledger: Ledger, stopping: threading.Event) -> None:
        super().__init__(name="outbox-sync", daemon=True)
        self.config = config
        self.client = client
        self.ledger = ledger
        self.stopping = stopping
        self._due = time.monotonic()
        self._wake = threading.Event()

    def soon(self, delay: float = SYNC_AFTER_UPLOAD_SECONDS) -> None:
        self._due = min(self._due, time.monotonic() + delay)
        self._wake.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            wait = self._due - time.monotonic()
            if wait > 0:
                self._wake.wait(min(wait, 60.0))
                self._wake.clear()
                continue
            self._due = time.monotonic() + self.config.outbox.sync_interval_seconds
            try:
                mirror.sync(self.config, self.client, self.ledger, cancel=self.stopping)
            except QontoError as exc:
                log.warning("outbox sync failed (%s); will try again at the next interval", exc)
            except Exception:  # noqa: BLE001 - a sync bug must not kill the uploads
                log.exception("outbox sync failed unexpectedly; will try again at the next interval")


def run(config: Config, client: QontoClient, ledger: Ledger) -> RunEnd:
    """The agent: watch and upload continuously, sync on a schedule, stop cleanly on SIGINT/SIGTERM."""
    stopping = threading.Event()
    wake = threading.Event()
    result: dict[str, RunEnd] = {}

    def on_signal(signum, _frame) -> None:
        log.info("stopping (%s): finishing the batch in flight", signal.Signals(signum).name)
        stopping.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    filing = Filing(config.inbox.path)  # a missing inbox is a configuration error, said before starting
    worker = threading.Thread(target=_run_loop, name="inbox",
                              args=(config, client, ledger, filing, stopping, wake, result), daemon=True)
    worker.start()
    while worker.is_alive() and not stopping.is_set():
        stopping.wait(1.0)
    worker.join(SHUTDOWN_GRACE_SECONDS)
    if worker.is_alive():
        log.warning("the batch in flight did not finish in time; it is abandoned safely and resumed at next start")
        return RunEnd.ABANDONED
    return result.get("end", RunEnd.STOPPED)


def _run_loop(config: Config, client: QontoClient, ledger: Ledger, filing: Filing, stopping: threading.Event,
              wake: threading.Event, result: dict[str, RunEnd]) -> None:
    watcher = Watcher(config.inbox, wake.set)
    pipeline = Pipeline(config, client, ledger, filing, wake.set)
    sync = SyncSchedule(config, client, ledger, stopping)
    try:
        watcher.start()  # events first, then the scan: nothing dropped in between is missed
        pipeline.resume()
        pipeline.scan()
        sync.start()
        next_rescan = time.monotonic() + config.inbox.rescan_seconds
        next_beat = 0.0
        uploaded = pipeline.totals.uploaded
        while not stopping.is_set():
            if not watcher.alive():
                log.error("the file watcher stopped unexpectedly; exiting so the service manager restarts "
                          "the agent (nothing is lost: files stay in the inbox)")
                result["end"] = RunEnd.WATCHER_DIED
                stopping.set()
                break
            for path in watcher.drain():
                pipeline.track(path)
            now = time.monotonic()
            if now >= next_rescan:
                pipeline.resume()
                pipeline.scan()
                next_rescan = now + config.inbox.rescan_seconds
            wait = pipeline.tick()
            if pipeline.totals.uploaded != uploaded:
                uploaded = pipeline.totals.uploaded
                sync.soon()
            if now >= next_beat:
                ledger.set("heartbeat", {"pid": os.getpid(), "at": time.time(), "mode": watcher.mode,
                                         "why": watcher.why})
                next_beat = now + HEARTBEAT_SECONDS
            pipeline.publish_pending()
            timeout = min(x for x in (wait, HEARTBEAT_SECONDS, next_rescan - now) if x is not None)
            wake.wait(max(0.01, timeout))
            wake.clear()
    except Exception:  # noqa: BLE001 - reported, then the process exits non-zero for its supervisor
        log.exception("the agent stopped on an unexpected error; files stay in the inbox")
        result["end"] = RunEnd.CRASHED
        stopping.set()
    finally:
        watcher.stop()
        pipeline.close()
        filing.close()
        ledger.set("heartbeat", None)


def upload_once(config: Config, client: QontoClient, ledger: Ledger, files: list[Path] | None = None,
                force: bool = False) -> PassSummary:
    """One pass over the inbox (or the given files inside it): what it did and what it left."""
    filing = Filing(config.inbox.path)
    pipeline = Pipeline(config, client, ledger, filing)
    progress = _Progress() if sys.stderr.isatty() else None
    try:
        pipeline.resume()
        if files:
            for path in files:
                pipeline.track(path)
                if force:
                    pipeline.forced.add(path)
        else:
            pipeline.scan()
        total = len(pipeline.settler.files)
        while True:
            wait = pipeline.tick(flush=not pipeline.settler.settling())  # full batches while files settle
            pipeline.publish_pending()
            if progress:
                progress.show(pipeline.totals, total)
            if pipeline.idle():
                break
            time.sleep(min(wait or 0.1, 0.5))
        if progress:
            progress.done()
        waiting = len(pipeline.settler.files)
    finally:
        pipeline.close()
        filing.close()
    totals = pipeline.totals
    log.info("upload pass: %d uploaded, %d already uploaded, %d failed (in error/), %d left for later",
             totals.uploaded, totals.duplicates, totals.failed, waiting)
    return PassSummary(totals, waiting)


class _Progress:
    """A single updating line on a terminal."""

    def show(self, totals: Totals, total: int) -> None:
        done = totals.uploaded + totals.duplicates + totals.failed
        sys.stderr.write(f"\r{done}/{total} files: {totals.uploaded} uploaded, {totals.duplicates} already "
                         f"uploaded, {totals.failed} failed ")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")
