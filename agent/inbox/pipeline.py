"""The inbox pipeline: settle → batch → upload → file away, one tick at a time.

It knows nothing of signals, schedules or exit codes: `service` drives it for `run` and `upload`.
"""

from __future__ import annotations

import logging
import stat
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agent.base import profile
from agent.base.errors import QontoError
from agent.base.events import fields
from agent.base.text import printable
from agent.config import Config
from agent.inbox.batch import Batcher
from agent.inbox.filing import Filing
from agent.inbox.hold import Hold
from agent.inbox.reasons import Unaccepted
from agent.inbox.rules import Rules, problem_of
from agent.inbox.settle import Ready, Settler
from agent.inbox.uploader import UPLOADS_IN_FLIGHT, Outcome, Uploader
from agent.qonto.client import QontoClient
from agent.state.ledger import Ledger, Pending

log = logging.getLogger(__name__)

PAUSED = "paused: "  # how the reason of a file held by a pause begins
WORKERS = 2 * UPLOADS_IN_FLIGHT  # batches being claimed, hashed or filed while others travel
QUEUED, SENDING = "queued for upload", "uploading"  # what `status` says of a file past the settler


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


class Pipeline:
    """settle → batch → upload → file away, one tick at a time; knows nothing of signals.

    Up to UPLOADS_IN_FLIGHT batches travel at once, so one batch's round trip overlaps the next
    one's, and as many more are claimed, hashed or filed meanwhile (WORKERS); their outcomes are
    applied here, on the caller's thread, where the settler lives. Batches wait in the batcher until
    a worker is free, and `status` is told only of the files whose line changed: a backlog of
    50,000 files costs little per tick.
    """

    def __init__(self, config: Config, client: QontoClient, ledger: Ledger, filing: Filing,
                 wake: Callable[[], None] | None = None) -> None:
        cfg = config.inbox
        self.config = config
        self.ledger = ledger
        self.filing = filing
        self.rules = Rules(cfg.path, cfg.patterns, cfg.recursive)
        self.settler = Settler(cfg.path, cfg.settle_seconds, cfg.incomplete_after_seconds, ledger)
        self.batcher = Batcher(cfg.batch_size, cfg.debounce_seconds, cfg.max_wait_seconds)
        self.client = client
        self.uploader = Uploader(config, client, ledger, filing)
        self.totals = Totals()
        self.forced: set[Path] = set()
        self._pause_until = 0.0
        self._pause_held = False  # files are held by a pause: lifted when it ends
        self._wake = wake
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="upload",
                                        initializer=profile.enter, initargs=(config.profile,))
        self._in_flight: dict[Future, list[Ready]] = {}
        self._stage: dict[Path, tuple[float, str]] = {}  # (since, why) of the files queued or travelling
        self._restaged: set[Path] = set()  # files that entered or left `_stage` since the last publish
        self._published: dict[Path, tuple[float, str]] | None = None  # what `status` was told, by file
        self._told: set[tuple[Path, Unaccepted]] = set()  # files left aside, each logged once

    def resume(self) -> None:
        """Files claimed by this process's dead predecessors are sent first, as they were ready;
        at a rescan, claims left by trouble are tried again (not while batches travel: those are theirs).
        While a folder refuses writes, one claim is tried first: the rest follow once it is filed."""
        if self._in_flight:
            return
        adopted = self.filing.adopt_orphans()
        claims = self.filing.claims()
        if adopted:
            log.info("resuming %d file(s) left in progress by an agent that stopped", adopted)
        if not claims:
            self.uploader.trouble.clear()  # nothing waits to be filed: no work is held up by a folder
        elif self.uploader.trouble.reason():
            self._account(self.uploader.send_claims(claims[:1]))
            if self.uploader.trouble.reason():
                return
            claims = claims[1:]
        for start in range(0, len(claims), self.config.inbox.batch_size):
            self._account(self.uploader.send_claims(claims[start:start + self.config.inbox.batch_size]))

    def track(self, path: Path, event: str | None = None) -> None:
        """A path to look at (an event's hint); `event` is what inotify said a program did to it, if anything."""
        verdict = self.rules.classify(path)
        if verdict is True:
            self.settler.event(path, event)
        elif verdict:
            try:
                st = path.lstat()
            except OSError:
                return  # gone meanwhile
            if not stat.S_ISDIR(st.st_mode):  # a folder renamed in a recursive inbox is no file
                self._tell(path, problem_of(st, verdict) or verdict)

    def scan(self) -> None:
        """Look at everything in the inbox: work is tracked, what is left aside is said once."""
        present = []
        for path, why in self.rules.survey():
            present.append(self._shown(path))
            if why is None or why in (Unaccepted.HARD_LINK, Unaccepted.LINK):
                self.settler.track(path)  # the settler looks again, and lists it while it stays so
            else:
                self._tell(path, why)
        self.ledger.prune_seen(present)  # the ages of unfinished files that are gone

    def _tell(self, path: Path, why: Unaccepted) -> None:
        if (path, why) not in self._told:
            self._told.add((path, why))
            log.warning("%s is left in the inbox: %s", path.relative_to(self.config.inbox.path), why.text,
                        extra=fields("upload", "left", file=self._shown(path), reason=why.text))

    def tick(self, flush: bool = False) -> float | None:
        """Do what is due; return seconds until something may be due again (None: wait for events)."""
        self._collect()
        ready, refused = self.settler.poll()
        for path, why in self.settler.unaccepted().items():
            self._tell(path, why)
        for item in refused:
            hold = self.uploader.refuse(item)
            if hold is None:
                self.totals.failed += 1
            else:
                self.settler.hold(hold)
        if self.uploader.trouble.retry_due() and not self._in_flight:
            self.resume()  # filing what waits in the claim folder is the test that the folder works again
        paused = self.paused()
        if ready and paused:
            for item in ready:
                self.settler.hold(Hold(item.path, paused[1], f"{PAUSED}{paused[0]}", item.dropped_at))
            ready, self._pause_held = [], True
        elif self._pause_held and not paused:
            self.settler.lift(PAUSED)  # the pause is over: what it held is taken up now, not at its next look
            self._pause_held = False
        self.batcher.add(ready)
        self._restage(ready, QUEUED)
        for batch in self.batcher.take(flush=flush, limit=WORKERS - len(self._in_flight)):
            force = any(item.path in self.forced for item in batch)
            future = self._pool.submit(self.uploader.send, batch, force=force)
            self._in_flight[future] = batch
            self._restage(batch, SENDING)
            if self._wake:
                future.add_done_callback(lambda _: self._wake())
        waits = [self.settler.next_check(),  # with every worker busy, the end of a batch wakes the loop
                 self.batcher.next_due() if len(self._in_flight) < WORKERS else None]
        waits = [w for w in waits if w is not None]
        if self.uploader.trouble.reason():
            waits.append(max(0.0, self.uploader.trouble.next_try() - time.monotonic()))
        if self._in_flight and not self._wake:
            waits.append(0.05)
        return min(waits) if waits else None

    def paused(self) -> tuple[str, float] | None:
        """Why uploads wait for a person now, and until when (monotonic clock); None when they do not."""
        trouble = self.uploader.trouble.reason()
        if trouble:
            return trouble, self.uploader.trouble.next_try()
        if time.monotonic() < self._pause_until:
            return str(self.totals.paused), self._pause_until
        return None

    def activity(self) -> str:
        """What the pass does or waits on, in a few words for the progress line."""
        paused = self.paused()
        if paused:
            return f"paused: {paused[0]}"
        counts = ((sum(len(batch) for batch in self._in_flight.values()), "sending"),
                  (len(self.batcher.queue), "batching"), (self.settler.settling_count(), "settling"))
        return ", ".join(f"{what} {n} file{'s' if n > 1 else ''}" for n, what in counts if n)

    def backlog(self) -> bool:
        """Files are ready and wait for a worker (`run` then puts its outbox sync off)."""
        return bool(self.batcher.queue)

    def idle(self) -> bool:
        """Nothing left that this pass could still send (held and incomplete files wait for later)."""
        return not self.batcher.queue and not self._in_flight and not self.settler.settling()

    def cancel_queued(self) -> None:
        """Drop the batches not started yet (they claimed nothing: files stay in the inbox); the ones
        running finish and file their files away in `close`."""
        for future in list(self._in_flight):
            if future.cancel():
                self._restage(self._in_flight.pop(future), None)

    def close(self) -> None:
        """Let the batches in flight finish and file their files away."""
        self._pool.shutdown(wait=True)
        self._collect()

    def _collect(self) -> None:
        for future in [f for f in self._in_flight if f.done()]:
            self._restage(self._in_flight.pop(future), None)
            self._account(future.result())  # a bug in a worker ends the loop, as it would inline

    def _account(self, outcome: Outcome) -> None:
        self.totals.add(outcome)
        if outcome.paused is not None and time.monotonic() >= self._pause_until:
            pause = self.client.pause_for()  # the client owns every pause that needs a person
            self._pause_until = time.monotonic() + pause
            log.error("paused: %s. Files stay in the inbox; next try in %.0f s.", outcome.paused, pause,
                      extra=fields("pause", "paused", reason=str(outcome.paused)))
        for hold in outcome.retry:
            self.settler.hold(hold.at_least_until(self._pause_until) if outcome.paused is not None else hold)

    def _restage(self, items: list[Ready], why: str | None) -> None:
        """Files queued (QUEUED), sent (SENDING) or back from a batch (None: the settler has them if anyone)."""
        for item in items:
            if why is None:
                self._stage.pop(item.path, None)
            else:
                self._stage[item.path] = (item.dropped_at, why)
            self._restaged.add(item.path)

    def _shown(self, path: Path) -> str:
        """A path as `status` and the ledger show it: relative to the inbox, as valid text."""
        return printable(str(path.relative_to(self.config.inbox.path)))

    def publish_pending(self) -> None:
        """Tell `status` (another process) what waits and why. Only the files whose line changed
        are written (all of them the first time): a backlog of 50,000 is not rewritten at every batch."""
        if self._published is None:
            rows = {path: (since, why) for path, since, why in self.settler.pending()} | self._stage
            self.ledger.set_pending(Pending(self._shown(p), since, why) for p, (since, why) in rows.items())
            self._published = rows
        else:
            published = self._published
            changed, gone = {}, []
            for path in self.settler.changed | self._restaged:
                row = self._stage.get(path) or self.settler.reason(path)
                if row is None and path in published:
                    gone.append(path)
                elif row is not None and published.get(path) != row:
                    changed[path] = row
            if changed or gone:
                self._published = None  # unknown until written: rewritten whole if this write fails
                self.ledger.set_pending([Pending(self._shown(p), since, why) for p, (since, why) in changed.items()],
                                        gone=[self._shown(p) for p in gone])
                for path in gone:
                    del published[path]
                published.update(changed)
                self._published = published
        self.settler.changed.clear()
        self._restaged.clear()
