"""Benchmark 7, backlog: N small PDFs already in the inbox when `run` starts (after a holiday or an outage).

The sandbox (in-process, loopback) adds `--latency` (100 ms) to every API answer; the
organization is empty, so the start-up sync is one request; the sandbox keeps the files, so the
syncs `run` starts after uploads mirror them into the outbox, as with Qonto. The inbox timings are the defaults
(settle 5 s, debounce 2 s): what an admin has after installing. Files: N unique one-page PDFs
of about 2 KB, written before the agent starts.

Measured, all on one monotonic clock (the sandbox's request log runs in this process):
- first upload: the first bulk request's `started_at` after the process start;
- all filed: from the process start until N files sit in done/ (polled every 0.1 s once the sandbox
  holds N invoices: listing 50,000 names every 0.5 s meanwhile would take this process's GIL from
  the sandbox's handlers, whose time is measured); at 4x the floor it gives up and reports how many
  were filed by then;
- the floor: ceil(N/20) requests × latency ÷ UPLOADS_IN_FLIGHT (agent/inbox/uploader.py), plus
  reading the bytes once (`sha256_file` over every file, timed here right before the agent
  starts, from page cache as the agent finds them);
- `status`: `qonto-agent status --json` run again and again (1 s apart) while `run` works, as a
  real process each time; its slowest and median wall times, start to exit;
- where the time went: the agent's CPU seconds, and the time inside and between bulk requests;
- peak RSS of `run`: wait4's `ru_maxrss` once it is stopped.
Targets: first upload within 10 s, all filed within 1.25x the floor, every `status` within 1 s,
peak RSS under 150 MB.

    python bench/bench_backlog.py [--quick] [--files 50000] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Agent, conclude, count_pdfs, cpu_seconds, today, unique_pdf, wait_for, write_config  # noqa: E402
from support import REPO, agent_command, agent_env  # noqa: E402

from agent.base.fingerprint import sha256_file  # noqa: E402
from agent.inbox.uploader import UPLOADS_IN_FLIGHT  # noqa: E402
from agent.sandbox.faults import Faults  # noqa: E402
from agent.sandbox.server import Sandbox  # noqa: E402

BULK = "/v2/supplier_invoices/bulk"
BATCH = 20
FIRST_UPLOAD_SECONDS = 10.0
FLOOR_FACTOR = 1.25
STATUS_SECONDS = 1.0
PEAK_RSS_MB = 150.0
GIVE_UP_FACTOR = 4.0  # times the floor: then the figures are taken as they stand
STATUS_PAUSE = 1.0  # between two `status` runs: each is a Python start, CPU taken from the agent


class StatusProbe(threading.Thread):
    """Runs `status --json` over and over until stopped; keeps each wall time and any unreadable answer."""

    def __init__(self, config: Path) -> None:
        super().__init__(daemon=True)
        self.config = config
        self.times: list[float] = []
        self.failures: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            started = time.monotonic()
            done = subprocess.run(agent_command(self.config, "status", "--json"), capture_output=True, text=True,
                                  env=agent_env(), cwd=REPO, timeout=60)
            self.times.append(time.monotonic() - started)
            try:
                json.loads(done.stdout)
            except ValueError:
                self.failures.append(f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
            self._halt.wait(STATUS_PAUSE)

    def finish(self) -> None:
        self._halt.set()
        self.join(90)


def in_flight(bulk: list[Any]) -> str:
    """Seconds with 0, 1, 2... bulk requests in flight (server side), from the first start to the last answer."""
    edges = sorted([(r.started_at, 1) for r in bulk] + [(r.finished_at, -1) for r in bulk])
    spans: dict[int, float] = {}
    level = 0
    for (at, step), (following, _) in zip(edges, edges[1:]):
        level += step
        spans[level] = spans.get(level, 0.0) + following - at
    return ", ".join(f"{spans[k]:.1f} s with {k} in flight" for k in sorted(spans))


def read_once(files: list[Path]) -> float:
    """Seconds to hash every file once: the bytes' share of the floor."""
    started = time.monotonic()
    for path in files:
        sha256_file(path)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=None, help="PDFs in the inbox (default 50000; 5000 with --quick)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the sandbox adds to every answer")
    parser.add_argument("--quick", action="store_true", help="fewer files")
    parser.add_argument("-v", "--verbose", action="store_true", help="run the agent with -v, its log kept in the temporary folder")
    args = parser.parse_args()
    n = args.files or (5_000 if args.quick else 50_000)

    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp, \
            Sandbox(seed=13, faults=Faults(latency_seconds=args.latency,
                                                             storage_latency_seconds=0)) as sandbox:
        root = Path(tmp)
        config = write_config(root, sandbox.base_url)
        inbox, done = root / "inbox", root / "inbox" / "done"
        started = time.monotonic()
        files = []
        for i in range(n):
            files.append(inbox / f"backlog-{i:06d}.pdf")
            files[-1].write_bytes(unique_pdf(i, 2_000, tag="K"))
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        print(f"{n} PDFs ({size_mb:.0f} MB) written in {time.monotonic() - started:.1f} s; sandbox latency "
              f"{args.latency * 1000:.0f} ms per request, default inbox timings", flush=True)
        reading = read_once(files)
        floor = math.ceil(n / BATCH) * args.latency / UPLOADS_IN_FLIGHT + reading
        print(f"floor: {math.ceil(n / BATCH)} requests x {args.latency * 1000:.0f} ms / {UPLOADS_IN_FLIGHT} in flight "
              f"+ {reading:.1f} s reading the bytes once = {floor:.1f} s", flush=True)

        sandbox.reset_log()
        agent = Agent(config, "run", verbose=args.verbose)
        probe = StatusProbe(config)
        probe.start()
        try:
            give_up = agent.started + max(120.0, floor * GIVE_UP_FACTOR)
            try:
                wait_for(lambda: sandbox.invoice_count() >= n, give_up - time.monotonic(), f"{n} invoices",
                         interval=0.5, agent=agent)
                wait_for(lambda: count_pdfs(done) >= n, max(0.0, give_up - time.monotonic()), f"all {n} files in done/",
                         interval=0.1, agent=agent)
            except TimeoutError:
                pass  # reported below, with what was filed meanwhile
            filed = time.monotonic() - agent.started
            filed_count = count_pdfs(done)
            cpu = cpu_seconds(agent.pid)
        finally:
            probe.finish()
            agent.stop()
            if args.verbose:
                kept = Path(tempfile.gettempdir()) / "bench-backlog-agent.log"
                kept.write_text(agent.log())
                print(f"the agent's log: {kept}", flush=True)
        log = sandbox.request_log()
        invoices = sandbox.invoice_count()

    bulk = sorted((r for r in log if r.path == BULK), key=lambda r: r.started_at)
    first = bulk[0].started_at - agent.started
    inside = sum(r.finished_at - r.started_at for r in bulk) / len(bulk)
    items = sum(r.items for r in bulk)
    peak_mb = (agent.maxrss_kb or 0) / 1024
    slowest = max(probe.times, default=float("nan"))
    median = statistics.median(probe.times) if probe.times else float("nan")
    ratio = filed / floor
    outcome = (f"all filed in {filed:.1f} s" if filed_count == n
               else f"{filed_count} of {n} filed when it gave up after {filed:.1f} s")
    print(f"agent run: first upload {first:.2f} s after start, {outcome}, "
          f"{len(bulk)} bulk requests with {items} items, {len(log)} requests in all, {invoices} invoices; "
          f"status --json {len(probe.times)} times, slowest {slowest:.2f} s, median {median:.2f} s; peak RSS {peak_mb:.1f} MB; "
          f"{cpu:.1f} CPU seconds in the agent; bulk requests {inside * 1000:.0f} ms each "
          f"(server side): {in_flight(bulk)}", flush=True)

    problems = [
        *([] if first <= FIRST_UPLOAD_SECONDS else [f"the first upload came {first:.1f} s after start"]),
        *([] if ratio <= FLOOR_FACTOR and filed_count == n else [f"{outcome}, {ratio:.2f}x the floor of {floor:.1f} s"]),
        *([] if slowest <= STATUS_SECONDS else [f"status took up to {slowest:.2f} s"]),
        *([] if probe.times else ["status never ran"]),
        *[f"status gave no JSON ({failure})" for failure in probe.failures[:3]],
        *([] if peak_mb < PEAK_RSS_MB else [f"peak RSS {peak_mb:.1f} MB"]),
        *([] if invoices == n or filed_count < n else [f"{invoices} invoices in the sandbox for {n} files"]),
    ]
    return conclude(f"backlog ({today()}, {n} files, {args.latency * 1000:.0f} ms): first upload {first:.1f} s, "
                    f"{outcome} vs floor {floor:.1f} s ({ratio:.2f}x), status slowest "
                    f"{slowest:.2f} s over {len(probe.times)} calls, peak RSS {peak_mb:.0f} MB (target first upload "
                    f"<= {FIRST_UPLOAD_SECONDS:.0f} s, <= {FLOOR_FACTOR}x the floor, status <= {STATUS_SECONDS:.0f} s, "
                    f"RSS < {PEAK_RSS_MB:.0f} MB", problems)


if __name__ == "__main__":
    sys.exit(main())
