"""`run` and `upload`: wire watcher, settler, batcher, uploader and the sync schedule together.

The inbox pipeline is one loop (watch → settle → batch → upload → file away) that sleeps on an
event when there is nothing to do, so an idle agent costs no CPU. `run` keeps it going in a worker
thread and syncs the outbox on a schedule; `upload` runs the same loop once over what is there.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TypeVar

from agent import progress, sidecars
from agent.metrics import MetricsFile
from agent.outbox import sync as mirror
from agent.base.files import ProcessLock
from agent.base.errors import CredentialsError, FolderError, LedgerBusy, LedgerError, PermissionDenied, QontoError
from agent.base import profile
from agent.base.events import fields
from agent.base.text import printable
from agent.base.verdict import Verdict
from agent.config import Config
from agent.inbox.filing import Filing
from agent.inbox.trouble import LEDGER
from agent.inbox.pipeline import Pipeline, Totals
from agent.inbox.rules import Rules
from agent.inbox.watcher import Watcher
from agent.notify import Notifier
from agent.qonto.client import QontoClient
from agent.qonto.ratelimit import RateLimiter
from agent.qonto.transport import RetryPolicy
from agent.state.ledger import Heartbeat, Ledger
from agent.state.tokens import FileTokenStore

log = logging.getLogger(__name__)
T = TypeVar("T", threading.Event, "Stop")

HEARTBEAT_SECONDS = 5.0
SHUTDOWN_GRACE_SECONDS = 8.0  # DESIGN.md: exit within 10 s of SIGTERM
SYNC_AFTER_UPLOAD_SECONDS = 10.0
NOTIFY_AFTER_SIGNAL_SECONDS = 1.0  # what is left of the 10 s for a last digest when a signal stopped it
FOLDER_RETRY_SECONDS = 5.0  # the first retry of a sync the outbox refused; it doubles while that lasts


@dataclass(frozen=True)
class PassSummary:
    """What one `upload` pass did, and how many files it left waiting for a later pass."""

    totals: Totals
    waiting: int
    interrupted: bool = False  # SIGINT/SIGTERM: what was claimed went back to the inbox
    stuck: str | None = None  # a folder that refused every write at the end of the pass

    @property
    def verdict(self) -> Verdict:
        if isinstance(self.totals.paused, (CredentialsError, PermissionDenied)):
            return Verdict.CREDENTIALS
        if self.stuck:
            return Verdict.FOLDER
        if self.totals.failed:
            return Verdict.FAILED
        return Verdict.LATER if self.waiting else Verdict.DONE


class RunEnd(enum.Enum):
    """Why `run` ended."""

    STOPPED = "stopped"  # a signal asked it to
    WATCHER_DIED = "watcher died"  # the service manager should start it again
    CRASHED = "crashed"  # an unexpected error; reported in the log
    ABANDONED = "abandoned"  # stopped, but a batch in flight did not finish in time
    LEDGER_LOST = "ledger lost"  # the ledger was deleted, replaced or became unusable: a person must look
    LEDGER_BUSY = "ledger busy"  # another process held the ledger locked too long: start again later


def open_client(config: Config, retry: RetryPolicy | None = None,
                limiter: RateLimiter | None = None) -> QontoClient:
    """The client every command uses, keeping rotated OAuth tokens in the file beside the ledger;
    `retry` replaces the default retry policy (`check` says a refused connection at once);
    `limiter` is a budget shared with this process's other clients (the caller closes it)."""
    return QontoClient(config.qonto, token_store=FileTokenStore(config.token_store), retry=retry, limiter=limiter)


class SyncSchedule(threading.Thread):
    """Syncs the outbox every `sync_interval_seconds`, and soon after uploads.

    While files wait for an upload slot (`set_busy`, from the inbox loop), a sync that is due waits
    too, up to one interval: it would mirror each fresh upload while the backlog is sent, and its
    requests would take the rate limit's budget from the uploads.
    """

    def __init__(self, config: Config, client: QontoClient, ledger: Ledger, stopping: threading.Event) -> None:
        super().__init__(name="outbox-sync", daemon=True)
        self.config = config
        self.client = client
        self.ledger = ledger
        self.stopping = stopping
        self._due = time.monotonic()
        self._wake = threading.Event()
        self.trouble: str | None = None  # the outbox refusing writes: what a person must fix
        self._retry = 0.0
        self._busy = False

    def set_busy(self, busy: bool) -> None:
        """Files wait for an upload slot, or no longer do: a sync put off for them starts then."""
        if self._busy and not busy:
            self._wake.set()
        self._busy = busy

    def soon(self, delay: float = SYNC_AFTER_UPLOAD_SECONDS) -> None:
        self._due = min(self._due, time.monotonic() + delay)
        self._wake.set()

    def run(self) -> None:
        profile.enter(self.config.profile)
        while not self.stopping.is_set():
            wait = self._due - time.monotonic()
            if wait <= 0 and self._busy:
                wait += self.config.outbox.sync_interval_seconds  # put off while files wait, an interval at most
            if wait > 0:
                self._wake.wait(min(wait, 60.0))
                self._wake.clear()
                continue
            self._due = time.monotonic() + self.config.outbox.sync_interval_seconds
            try:
                mirror.sync(self.config, self.client, self.ledger, cancel=self.stopping)
                self._folder_works()
            except FolderError as exc:
                self._folder_refused(exc)
            except (QontoError, LedgerError) as exc:  # a lost ledger also stops the loop at its next heartbeat
                log.warning("outbox sync failed (%s); will try again at the next interval", exc)
            except Exception:  # noqa: BLE001 - a sync bug must not kill the uploads
                log.exception("outbox sync failed unexpectedly; will try again at the next interval")

    def _folder_refused(self, exc: FolderError) -> None:
        """Try again soon (5 s, doubling up to the interval), not at the next interval: a person
        freeing space expects the mirror to catch up by itself."""
        interval = self.config.outbox.sync_interval_seconds
        self._retry = min(self._retry * 2 if self._retry else FOLDER_RETRY_SECONDS, interval)
        self._due = time.monotonic() + self._retry
        if self.trouble is None:
            log.error("paused: %s. The outbox sync is tried again in %.0f s and resumes by itself once it works; "
                      "uploads go on.", exc, self._retry)
        self.trouble = str(exc)

    def _folder_works(self) -> None:
        if self.trouble is not None:
            log.info("the outbox can be written again; the sync resumed")
        self.trouble, self._retry = None, 0.0


class Stop:
    """The request to stop: a flag every loop checks, and the wake-up events of the loops that
    sleep, so each one notices at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._wakes: list[threading.Event | Stop] = []

    def also(self, other: T) -> T:
        """`other` (an event, or the stop of one organization's loop) is set when this is."""
        self._wakes.append(other)
        if self.is_set():
            other.set()
        return other

    def set(self) -> None:
        self.event.set()
        for other in self._wakes:
            other.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float) -> bool:
        return self.event.wait(timeout)


def on_signals(stop: Stop) -> None:
    """SIGINT/SIGTERM ask every loop to stop, finishing the batches in flight."""
    def on_signal(signum, _frame) -> None:
        log.info("stopping (%s): finishing the batch in flight", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def run(config: Config, client: QontoClient, ledger: Ledger) -> RunEnd:
    """The agent: watch and upload continuously, sync on a schedule, stop cleanly on SIGINT/SIGTERM."""
    stop = Stop()
    on_signals(stop)
    filing = Filing(config.inbox.path)  # a missing inbox is a configuration error, said before starting
    alive = ProcessLock(config.run_lock)  # held while this process lives: `status` tries it (any platform)
    if not alive.acquire(blocking=True, timeout=2.0):
        log.info("another `run` of this configuration holds %s; `status` follows that one", config.run_lock)
    try:
        return serve(config, client, ledger, filing, stop)
    finally:
        alive.release()  # `status` sees the stop at once, not at the process's exit


def serve(config: Config, client: QontoClient, ledger: Ledger, filing: Filing, stop: Stop) -> RunEnd:
    """One organization's loop in a worker thread until `stop` or its end; the caller holds its
    run lock and the signals. Says an unexpected end by the notifications too."""
    result: dict[str, RunEnd] = {}
    notices = Notifier(config)
    own = stop.also(Stop())  # this organization's loop may end alone (its watcher died, its ledger is lost)
    worker = threading.Thread(target=_run_loop, name="inbox",
                              args=(config, client, ledger, filing, own, result, notices), daemon=True)
    worker.start()
    while worker.is_alive() and not own.is_set():
        own.wait(1.0)
    worker.join(SHUTDOWN_GRACE_SECONDS)
    end = result.get("end", RunEnd.STOPPED)
    if worker.is_alive():
        log.warning("the batch in flight did not finish in time; it is abandoned safely and resumed at next start")
        end = result.get("end", RunEnd.ABANDONED)  # an error that ended the loop keeps its exit code
    signalled = end in (RunEnd.STOPPED, RunEnd.ABANDONED)
    notices.close(None if end is RunEnd.STOPPED else f"the agent stopped unexpectedly ({end.value}); its log says why",
                  wait=NOTIFY_AFTER_SIGNAL_SECONDS if signalled else None)
    return end


def _run_loop(config: Config, client: QontoClient, ledger: Ledger, filing: Filing, stopping: Stop,
              result: dict[str, RunEnd], notices: Notifier) -> None:
    profile.enter(config.profile)
    wake = stopping.also(threading.Event())
    watcher = Watcher(config.inbox, wake.set)
    pipeline = Pipeline(config, client, ledger, filing, wake.set)
    pipeline.uploader.on_error = notices.refused
    sync = SyncSchedule(config, client, ledger, stopping.event)
    metrics = MetricsFile(config.status.metrics_file, config.profile) if config.status.metrics_file else None
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
                _end(RunEnd.WATCHER_DIED, result, stopping)
                break
            now = time.monotonic()
            timeout = HEARTBEAT_SECONDS
            try:
                for path, event in watcher.drain():
                    pipeline.track(path, event)
                if now >= next_rescan:
                    next_rescan = now + config.inbox.rescan_seconds
                    pipeline.resume()
                    pipeline.scan()
                wait = pipeline.tick()
                sync.set_busy(pipeline.backlog())
                if pipeline.totals.uploaded != uploaded:
                    uploaded = pipeline.totals.uploaded
                    sync.soon()
                    sidecars.clear_stale(config.inbox.path, ledger)
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_SECONDS
                    if _beat(ledger, watcher, client, pipeline, sync, metrics):
                        next_rescan = now  # the ledger's trouble is over: what waited is taken up at once
                    notices.needs_person(_needs_person(client, pipeline, sync)[0])
                pipeline.publish_pending()
                timeout = min(x for x in (wait, HEARTBEAT_SECONDS, next_rescan - now) if x is not None)
            except FolderError as exc:  # the ledger's disk is full: nothing is lost; the rescan catches up
                pipeline.uploader.trouble.refused(LEDGER, exc)
                next_rescan = min(next_rescan, now + HEARTBEAT_SECONDS)
            wake.wait(max(0.01, timeout))
            wake.clear()
    except LedgerError as exc:  # a sentence, not a traceback; the exit code tells the supervisor
        log.error("%s", exc)
        _end(RunEnd.LEDGER_BUSY if isinstance(exc, LedgerBusy) else RunEnd.LEDGER_LOST, result, stopping)
    except Exception:  # noqa: BLE001 - reported, then the process exits non-zero for its supervisor
        log.exception("the agent stopped on an unexpected error; files stay in the inbox")
        _end(RunEnd.CRASHED, result, stopping)
    finally:
        _shut_down(watcher, pipeline, filing, client, sync, ledger, result.get("end"))


def _end(end: RunEnd, result: dict[str, RunEnd], stopping: Stop) -> None:
    """End one organization's loop for this reason (its supervisor, or the fleet, starts it again)."""
    if end is RunEnd.WATCHER_DIED:
        log.error("the file watcher stopped unexpectedly; exiting so the service manager restarts "
                  "the agent (nothing is lost: files stay in the inbox)")
    result["end"] = end
    stopping.set()


def _shut_down(watcher: Watcher, pipeline: Pipeline, filing: Filing, client: QontoClient, sync: SyncSchedule,
               ledger: Ledger, end: RunEnd | None) -> None:
    """Stop watching, let the batches in flight file their files, give claims back, end the heartbeat."""
    watcher.stop()
    pipeline.close()
    filing.close()
    client.close()  # nothing more is sent: sync requests still waiting for their turn give up now
    if sync.is_alive():  # it stops at its next step (cancel=stopping); the ledger closes after
        sync.join(SHUTDOWN_GRACE_SECONDS / 2)
    if end is None:  # a clean stop; after any other end the heartbeat stays, and `status` expects `run`
        with contextlib.suppress(FolderError):  # a full disk: `status` then sees the heartbeat age
            ledger.beat(None)


def _beat(ledger: Ledger, watcher: Watcher, client: QontoClient, pipeline: Pipeline, sync: SyncSchedule,
          metrics: MetricsFile | None) -> bool:
    """Write the heartbeat: this process is alive, watches the inbox this way, and may be paused
    waiting for a person (a folder's trouble lasts until it is fixed: it has no end to show).
    True when this write ended the ledger's trouble."""
    ledger.check_same_file()
    reason, until = _needs_person(client, pipeline, sync)
    ledger.beat(Heartbeat(os.getpid(), time.time(), watcher.mode, watcher.why, paused=reason, paused_until=until))
    if metrics:
        metrics.write(ledger, paused=reason is not None)
    return pipeline.uploader.trouble.worked(LEDGER)


def _needs_person(client: QontoClient, pipeline: Pipeline, sync: SyncSchedule) -> tuple[str | None, float | None]:
    """What a person must fix now (credentials, a permission, a folder refusing writes) and until
    when (wall clock) it is not tried again; a folder's trouble has no end: it lasts until fixed."""
    pause = client.person_pause()
    return (pause.reason, pause.until) if pause else (pipeline.uploader.trouble.reason() or sync.trouble, None)


@contextlib.contextmanager
def interruptible(what: str) -> Iterator[threading.Event]:
    """While in the block, SIGINT/SIGTERM set the event (stop taking new work); a second one
    raises KeyboardInterrupt. The handlers in place before are put back after."""
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("stopping %s (%s): finishing what is in flight; a second signal stops at once",
                 what, signal.Signals(signum).name)
        stop.set()

    before = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def upload_once(config: Config, client: QontoClient, ledger: Ledger, files: list[Path] | None = None,
                force: bool = False, stop: threading.Event | None = None, show_progress: bool = False) -> PassSummary:
    """One pass over the inbox (or the given files inside it): what it did and what it left.
    `stop` (set on SIGINT/SIGTERM) ends it early: no new batch, queued ones dropped, claims given back.
    `show_progress`: a progress line on the terminal (`progress.wanted`)."""
    stop = stop or threading.Event()
    filing = Filing(config.inbox.path)
    pipeline = Pipeline(config, client, ledger, filing)
    try:
        pipeline.resume()
        if files:
            for path in files:
                pipeline.track(path)
                if force:
                    pipeline.forced.add(path)
        else:
            pipeline.scan()
        _until_idle(pipeline, stop, show_progress)
        if stop.is_set():
            pipeline.cancel_queued()
            waiting = 0
        else:
            left = pipeline.settler.pending()  # files left aside for a person are not "waiting"
            for path, _, why in left:
                log.info("left waiting: %s — %s", path.relative_to(config.inbox.path), why,
                         extra=fields("upload", "waiting", file=printable(str(path.relative_to(config.inbox.path))),
                                      reason=why))
            waiting = len(left)
    finally:
        pipeline.close()
        filing.close()
    totals = pipeline.totals
    if stop.is_set():
        return _interrupted(config, totals)
    if totals.uploaded or totals.duplicates:
        sidecars.clear_stale(config.inbox.path, ledger)
    log.info("upload pass: %d uploaded, %d already uploaded, %d failed (in error/), %d left for later",
             totals.uploaded, totals.duplicates, totals.failed, waiting)
    stuck = pipeline.uploader.trouble.reason()
    if stuck:
        log.error("%s; the files wait in the inbox, and the next pass files them without sending them again", stuck)
    return PassSummary(totals, waiting, stuck=stuck)


def _until_idle(pipeline: Pipeline, stop: threading.Event, show_progress: bool) -> None:
    """Tick the pipeline until nothing is left that this pass could send, or `stop` is set."""
    total = len(pipeline.settler.files)
    with progress.shown("files", show_progress, pipeline.activity(), total) as bar:
        while not stop.is_set():
            wait = pipeline.tick(flush=not pipeline.settler.settling())  # full batches while files settle
            pipeline.publish_pending()
            if bar:
                totals = pipeline.totals
                bar.show(totals.uploaded + totals.duplicates + totals.failed, total, pipeline.activity())
            if pipeline.idle():
                break
            stop.wait(min(wait or 0.1, 0.5))


def _interrupted(config: Config, totals: Totals) -> PassSummary:
    """The summary of a pass stopped by a signal, counting what is back in the inbox."""
    rules = Rules(config.inbox.path, config.inbox.patterns, config.inbox.recursive)
    waiting = sum(1 for _, why in rules.survey() if why is None)
    log.warning("upload interrupted: %d uploaded, %d already uploaded, %d failed (in error/); %d file(s) are "
                "back in the inbox for the next pass", totals.uploaded, totals.duplicates, totals.failed, waiting)
    return PassSummary(totals, waiting, interrupted=True)
