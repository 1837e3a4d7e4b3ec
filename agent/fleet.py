"""`run` for a configuration with profiles: every organization served by one process.

Each profile has its own runner thread: its watcher, pipeline, sync schedule, ledger and client,
and one rate budget shared by all (`limiter`). A profile that cannot work (a missing share, a
ledger it cannot open, a watcher that died) never stops the others: its runner holds the
profile's run lock, writes the reason into the profile's heartbeat for `status`, and starts the
profile again after a pause (doubling up to 10 minutes). Refused credentials need no restart:
the client pauses by itself and the heartbeat says why.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from agent import service
from agent.base import profile
from agent.base.errors import AgentError
from agent.base.files import ProcessLock
from agent.config import Config
from agent.inbox.filing import Filing
from agent.qonto.ratelimit import RateLimiter
from agent.state.ledger import Heartbeat, Ledger

log = logging.getLogger(__name__)

RESTART_FIRST_SECONDS = 5.0
RESTART_MAX_SECONDS = 600.0


def run(configs: list[Config], limiter: RateLimiter | None) -> service.RunEnd:
    """Serve every profile until SIGINT/SIGTERM; ABANDONED when a batch in flight did not finish."""
    stop = service.Stop()
    service.on_signals(stop)
    runners = [Runner(config, limiter, stop) for config in configs]
    log.info("serving %d profiles: %s", len(runners), ", ".join(c.profile or "" for c in configs))
    for runner in runners:
        runner.start()
    while not stop.wait(1.0) and any(r.is_alive() for r in runners):
        pass
    if limiter is not None:
        limiter.close()  # requests still waiting for their turn give up: nothing more is sent
    for runner in runners:
        runner.join()
    ends = {runner.end for runner in runners}
    return service.RunEnd.ABANDONED if service.RunEnd.ABANDONED in ends else service.RunEnd.STOPPED


class Runner(threading.Thread):
    """One profile's life in the process: started, and started again after trouble, until stopped."""

    def __init__(self, config: Config, limiter: RateLimiter | None, stop: service.Stop) -> None:
        super().__init__(name=f"profile-{config.profile}", daemon=True)
        self.config, self.limiter, self.stop = config, limiter, stop
        self.end = service.RunEnd.STOPPED

    def run(self) -> None:
        profile.enter(self.config.profile)
        alive = ProcessLock(self.config.run_lock)
        if not alive.acquire(blocking=True, timeout=2.0):
            log.info("another `run` serves this profile (it holds %s); `status` follows that one", self.config.run_lock)
        delay = RESTART_FIRST_SECONDS
        try:
            while not self.stop.is_set():
                trouble = self._serve_once()
                if self.stop.is_set():
                    return
                log.error("%s stopped: %s. It starts again in %.0f s; the other profiles go on.",
                          self.config.label, trouble, delay)
                self._wait(delay, trouble)
                delay = min(delay * 2, RESTART_MAX_SECONDS)
        finally:
            alive.release()

    def _serve_once(self) -> str:
        """Serve until stopped or until the profile ends; what ended it, in words."""
        try:
            ledger = Ledger(self.config.state.path, previous=self.config.previous_ledger)
        except AgentError as exc:
            return str(exc)
        try:
            filing = Filing(self.config.inbox.path)
            with service.open_client(self.config, limiter=self.limiter) as client:
                self.end = service.serve(self.config, client, ledger, filing, self.stop)
            return self.end.value
        except AgentError as exc:  # a missing or unreadable inbox: said, and tried again later
            return str(exc)
        finally:
            ledger.close()

    def _wait(self, delay: float, trouble: str) -> None:
        """Wait before starting again, writing the heartbeat meanwhile: `status` shows the profile
        as alive but needing a person, with the reason. A stop meanwhile is a clean stop: the
        heartbeat is cleared, as `run` clears it. Without a ledger (it is the trouble) nothing is written."""
        ledger = self._ledger()
        until = time.monotonic() + delay
        try:
            while not self.stop.is_set() and time.monotonic() < until:
                beat = Heartbeat(os.getpid(), time.time(), "none", "the profile waits to start again", paused=trouble)
                self._beat(ledger, beat)
                self.stop.wait(min(service.HEARTBEAT_SECONDS, max(0.0, until - time.monotonic())))
            if self.stop.is_set():
                self._beat(ledger, None)
        finally:
            if ledger is not None:
                ledger.close()

    def _ledger(self) -> Ledger | None:
        """The profile's ledger, or None when it is the trouble (the "stopped" line said why)."""
        try:
            return Ledger(self.config.state.path, previous=self.config.previous_ledger)
        except AgentError:
            return None

    @staticmethod
    def _beat(ledger: Ledger | None, beat: Heartbeat | None) -> None:
        if ledger is None:
            return
        try:
            ledger.beat(beat)
        except AgentError:
            pass  # the ledger's own trouble: its next start says it
