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
from agent.inbox.uploader import Outcome, Uploader
from agent.qonto.client import QontoClient
from agent.state.ledger import Ledger, Pending

log = logging.getLogger(__name__)

PAUSED = "paused: "  # how the reason of a file held by a pause begins
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
        self.settler = Settler(cfg.path, cfg.settle_seconds, cfg.incomplete_after_seconds, ledger)
        self.batcher = Batcher(cfg.batch_size, cfg.debounce_seconds, cfg.max_wait_seconds)
        self.client = client
        self.uploader = Uploader(config, client, ledger, filing)
        self.totals = Totals()
        self.forced: set[Path] = set()
        self._pause_until = 0.0
        self._pause_held = False  # files are held by a pause: lifted when it ends
        self._pending_written: list[tuple[str, str]] | None = None
        self._wake = wake
        self._pool = ThreadPoolExecutor(UPLOADS_IN_FLIGHT, thread_name_prefix="upload",
                                        initializer=profile.enter, initargs=(config.profile,))
        self._in_flight: dict[Future, list[Ready]] = {}
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
        for batch in self.batcher.take(flush=flush):
            force = any(item.path in self.forced for item in batch)
            future = self._pool.submit(self.uploader.send, batch, force=force)
            self._in_flight[future] = batch
            if self._wake:
                future.add_done_callback(lambda _: self._wake())
        waits = [w for w in (self.settler.next_check(), self.batcher.next_due()) if w is not None]
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

    def idle(self) -> bool:
        """Nothing left that this pass could still send (held and incomplete files wait for later)."""
        return not self.batcher.queue and not self._in_flight and not self.settler.settling()

    def cancel_queued(self) -> None:
        """Drop the batches not started yet (they claimed nothing: files stay in the inbox); the ones
        running finish and file their files away in `close`."""
        for future in list(self._in_flight):
            if future.cancel():
                del self._in_flight[future]

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
            pause = self.client.pause_for()  # the client owns every pause that needs a person
            self._pause_until = time.monotonic() + pause
            log.error("paused: %s. Files stay in the inbox; next try in %.0f s.", outcome.paused, pause,
                      extra=fields("pause", "paused", reason=str(outcome.paused)))
        for hold in outcome.retry:
            self.settler.hold(hold.at_least_until(self._pause_until) if outcome.paused is not None else hold)

    def _shown(self, path: Path) -> str:
        """A path as `status` and the ledger show it: relative to the inbox, as valid text."""
        return printable(str(path.relative_to(self.config.inbox.path)))

    def publish_pending(self) -> None:
        """Tell `status` (another process) what waits and why; written only when it changed."""
        entries = sorted((self._shown(p), since, why)
                         for p, since, why in self.settler.pending())
        entries += [(self._shown(r.path), r.dropped_at, "queued for upload")
                    for r in self.batcher.queue]
        entries += [(self._shown(r.path), r.dropped_at, "uploading")
                    for batch in list(self._in_flight.values()) for r in batch]
        key = [(f, why) for f, _, why in entries]
        if key != self._pending_written:
            self.ledger.set_pending(Pending(f, since, why) for f, since, why in entries)
            self._pending_written = key
