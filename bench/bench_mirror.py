"""Benchmark: the outbox mirror against the sequential loop of Qonto's sync guide, in one run.

Both read the same invoices from a local sandbox whose every answer is delayed (50 ms by default,
roughly a round trip to Qonto): the baseline lists every page, then fetches each attachment and
downloads it one after the other; the mirror is `agent.outbox.sync.sync` as `qonto-agent sync` runs it.
The sandbox runs in its own process, as Qonto would be on its own machines, so that its work does
not compete with the client's for one interpreter.

The rate is checked twice. Client side, exactly: every API request the client sends takes a slot of
its rate limiter (downloads from pre-signed storage links do not: they are another host's budget);
the bench records when, checks that the sandbox received just as many API requests (none bypassed
the limiter), and that no 10-second window holds more than the configured limit. Server
side, as Qonto would count: arrival times jitter by a few milliseconds, so the count there may
differ by a handful; it must stay under Qonto's own limit, which the configured one keeps a margin to.

    python bench/bench_mirror.py [--invoices 1000] [--latency 0.05] [--storage-latency 0] [--concurrency N]

Exit status 1 when the mirror is less than 3x faster, slower than 1.25x its floor (the larger of
API requests ÷ the configured rate and API requests × latency ÷ concurrency), or went over the
rate limit. Downloads cost nothing by default (`--storage-latency 0`): the API is what is measured.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import conclude  # noqa: E402

from agent import config as configuration  # noqa: E402
from agent.outbox import sync as mirror  # noqa: E402
from agent.qonto.client import QontoClient  # noqa: E402
from agent.qonto.ratelimit import RateLimiter  # noqa: E402
from agent.sandbox.faults import Faults  # noqa: E402
from agent.sandbox.server import Sandbox  # noqa: E402
from agent.state.ledger import Ledger  # noqa: E402

WINDOW_SECONDS = 10.0
REQUIRED_SPEED_UP = 3.0
FLOOR_RATIO = 1.25  # at most this many times the floor (see `floor` in main)
QONTO_LIMIT = 1000  # requests per 10 s and per IP, Qonto's own


class RecordingLimiter(RateLimiter):
    """The client's rate limiter, also noting the instant it counted for each request it let through.

    That instant is the clock reading of the acquiring thread's last check (the one that passed),
    kept per thread: a reading taken after `acquire` returns could be late by a thread switch.
    """

    def __init__(self, config: configuration.QontoConfig) -> None:
        self._reading = threading.local()
        super().__init__([(config.max_requests_per_10s, 10.0), (config.max_requests_per_10min, 600.0)],
                         clock=self._clock)
        self.sent: list[float] = []
        self._record_lock = threading.Lock()

    def _clock(self) -> float:
        self._reading.value = time.monotonic()
        return self._reading.value

    def acquire(self, urgent: bool = False) -> None:
        super().acquire(urgent)
        with self._record_lock:
            self.sent.append(self._reading.value)


def _serve(conn: Connection, latency: float, storage_latency: float) -> None:
    """The sandbox process: answers (command, argument) messages until "stop"."""
    faults = Faults(latency_seconds=latency, storage_latency_seconds=storage_latency)
    with Sandbox(seed=7, analysis_delay_seconds=0.0, faults=faults) as sandbox:
        conn.send(sandbox.base_url)
        while True:
            command, argument = conn.recv()
            if command == "seed":
                conn.send(len(sandbox.seed(argument)))
            elif command == "arrivals":  # when each logged API request arrived (monotonic seconds)
                conn.send([record.started_at for record in sandbox.request_log()
                           if not record.path.startswith("/_storage/")])  # downloads: another host's budget
            elif command == "reset":
                conn.send(sandbox.reset_log())
            else:
                conn.send(None)
                return


class RemoteSandbox:
    """A `Sandbox` in a child process, driven over a pipe."""

    def __init__(self, latency: float, storage_latency: float = 0.0) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, latency, storage_latency), daemon=True)
        self._process.start()
        self.base_url: str = self._conn.recv()

    def call(self, command: str, argument: Any = None) -> Any:
        self._conn.send((command, argument))
        return self._conn.recv()

    def __enter__(self) -> RemoteSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.call("stop")
        self._process.join(10)


def max_in_window(arrivals: list[float], seconds: float = WINDOW_SECONDS) -> int:
    """The most requests the server received in any `seconds`-long window."""
    times = sorted(arrivals)
    best = first = 0
    for last, moment in enumerate(times):
        while moment - times[first] >= seconds:
            first += 1
        best = max(best, last - first + 1)
    return best


def sequential(client: QontoClient, dest: Path) -> int:
    """Qonto's guide, literally: list everything, then one attachment after another."""
    invoices = list(client.iter_supplier_invoices())
    for invoice in invoices:
        if invoice.get("attachment_id"):
            attachment = client.get_attachment(invoice["attachment_id"])
            client.download(attachment["url"], dest / f"{invoice['id']}.pdf")
    return len(invoices)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to every API answer")
    parser.add_argument("--storage-latency", type=float, default=0.0,
                        help="seconds added to every download (default 0: downloads free, the API is measured)")
    parser.add_argument("--concurrency", type=int, default=None, help="default: the config's [outbox] concurrency")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp, \
            RemoteSandbox(args.latency, args.storage_latency) as sandbox:
        root = Path(tmp)
        outbox: dict = {"path": "outbox"}
        if args.concurrency:
            outbox["concurrency"] = args.concurrency
        config = configuration.from_mapping(
            {"qonto": {"base_url": sandbox.base_url, "login": "sandbox-org", "secret_key": "sandbox-secret-key"},
             "outbox": outbox, "state": {"path": "state/ledger.sqlite"}},
            base_dir=root, env={})
        sandbox.call("seed", args.invoices)
        limit = config.qonto.max_requests_per_10s
        print(f"{args.invoices} invoices, {args.latency * 1000:.0f} ms per answer, "
              f"mirror concurrency {config.outbox.concurrency}, limit {limit} requests per 10 s", flush=True)

        (root / "sequential").mkdir()
        with QontoClient(config.qonto) as client:
            started = time.monotonic()
            sequential(client, root / "sequential")
            baseline = time.monotonic() - started
        arrivals = sandbox.call("arrivals")
        baseline_peak = max_in_window(arrivals)
        print(f"sequential: {baseline:.1f} s, {len(arrivals)} requests", flush=True)

        sandbox.call("reset")
        ledger = Ledger(config.state.path)
        limiter = RecordingLimiter(config.qonto)
        with QontoClient(config.qonto, limiter=limiter) as client:
            started = time.monotonic()
            report = mirror.sync(config, client, ledger)
            elapsed = time.monotonic() - started
        arrivals = sandbox.call("arrivals")
        print(f"mirror: {elapsed:.1f} s, {len(arrivals)} requests, {report.written} JSONs, "
              f"{report.downloaded} attachments, complete: {report.complete}", flush=True)

        sandbox.call("reset")  # the incremental sync that follows, with nothing changed
        with QontoClient(config.qonto) as client:
            mirror.sync(config, client, ledger)
        ledger.close()
        quiet_requests = len(sandbox.call("arrivals"))
        print(f"incremental sync with nothing changed: {quiet_requests} request(s)", flush=True)

    peak, arrived_peak = max_in_window(limiter.sent), max_in_window(arrivals)
    speed_up = baseline / elapsed
    # What no client could beat: the API requests at the configured rate, or at the latency with
    # `concurrency` of them in flight, whichever is slower.
    floor = max(len(limiter.sent) / (limit / WINDOW_SECONDS),
                len(limiter.sent) * args.latency / config.outbox.concurrency)
    print(f"received by the sandbox: max {arrived_peak} in any 10 s (Qonto's limit {QONTO_LIMIT}); "
          f"sequential: max {baseline_peak}")
    problems = [
        *([] if report.complete else ["the sync did not complete"]),
        *([] if speed_up >= REQUIRED_SPEED_UP else [f"less than {REQUIRED_SPEED_UP:.0f}x faster"]),
        *([] if elapsed <= FLOOR_RATIO * floor else [f"{elapsed / floor:.2f}x its floor, over {FLOOR_RATIO}x"]),
        *([] if peak <= limit else [f"{peak} requests in 10 s, over the configured {limit}"]),
        *([] if len(limiter.sent) == len(arrivals) else
          [f"{len(arrivals)} requests arrived but {len(limiter.sent)} went through the rate limiter"]),
        *([] if arrived_peak <= QONTO_LIMIT else [f"Qonto would have seen {arrived_peak} requests in 10 s"]),
        *([] if quiet_requests == 1 else [f"the no-change sync sent {quiet_requests} requests, not 1"]),
    ]
    return conclude(f"mirror: {args.invoices} invoices in {elapsed:.1f} s vs sequential {baseline:.1f} s: "
                    f"{speed_up:.1f}x faster, {elapsed / floor:.2f}x its floor of {floor:.1f} s; no-change sync "
                    f"{quiet_requests} request; max {peak} requests in any 10 s (limit {limit}) (target >= "
                    f"{REQUIRED_SPEED_UP:.0f}x, <= {FLOOR_RATIO}x the floor, 1 request, within the limit", problems)


if __name__ == "__main__":
    sys.exit(main())
