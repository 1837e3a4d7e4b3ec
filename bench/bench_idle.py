"""Benchmark 5, idle cost: CPU seconds of `run` over an idle window, with 0 and 10,000 files in done/.

Four agents (`python -m agent run`), each with its own inbox and its own in-process sandbox:
native events with 0 and with 10,000 files in done/, and polling mode with 0 and 10,000.
The configuration keeps the defaults a user gets (settle 5 s, debounce 2 s, poll interval 5 s,
rescan every 300 s, sync every 900 s), with only `polling` set to true or false.

Each agent is started, its start-up sync is awaited (the sandbox sees its list request), plus a
few seconds; then utime + stime of the process (all threads, /proc/<pid>/stat, 10 ms ticks) is
read at the start and the end of the idle window (60 s; 15 s with --quick), with the threads'
schedstat CPU time (nanoseconds, shown in brackets) for a ratio that ticks are too coarse to give,
and the requests its sandbox received inside the window are counted (expected: 0). The four run
side by side so the bench fits its time budget: CPU seconds are per process, so they do not add
up across agents.

The 0-file agent is the baseline of its mode. Targets: under 0.5 s of CPU per window for each,
and no growth with the archive (10k figure <= 1.5 x the 0-file figure + 0.05 s, i.e. ratio ~1).

    python bench/bench_idle.py [--quick] [--window 60] [--archive 10000]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (Agent, cpu_seconds, thread_cpu_seconds, today, unique_pdf, verdict,  # noqa: E402
                     wait_for, write_config)

from agent.sandbox.server import Sandbox  # noqa: E402

TARGET_CPU = 0.5
SETTLE_AFTER_SYNC = 3.0


@dataclass
class Leg:
    mode: str  # "native" | "polling"
    archive: int
    sandbox: Sandbox
    agent: Agent | None = None
    cpu_start: float = 0.0
    cpu: float = 0.0  # utime + stime over the window (clock ticks)
    fine_start: float = 0.0
    fine: float = 0.0  # the same from the threads' schedstat (ns resolution)
    t0: float = 0.0
    t1: float = 0.0
    requests: int = 0
    rss_kb: int = 0

    @property
    def name(self) -> str:
        return f"{self.mode}/{self.archive}"


def fill_archive(done: Path, count: int) -> None:
    """`count` small, distinct PDFs in done/, as months of filed invoices."""
    done.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (done / f"invoice-{i:05d}.pdf").write_bytes(unique_pdf(i, 2_000, tag="A"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=None, help="idle seconds measured (default 60; 15 quick)")
    parser.add_argument("--archive", type=int, default=10_000, help="files in done/ for the archive runs")
    parser.add_argument("--quick", action="store_true", help="a 15 s window")
    args = parser.parse_args()
    window = args.window or (15.0 if args.quick else 60.0)

    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        legs: list[Leg] = []
        for mode in ("native", "polling"):
            for archive in (0, args.archive):
                sandbox = stack.enter_context(Sandbox(seed=len(legs)))
                leg = Leg(mode, archive, sandbox)
                work = root / leg.name.replace("/", "-")
                config = write_config(work, sandbox.base_url, inbox={"polling": mode == "polling"},
                                      outbox={"sync_interval_seconds": 900})
                if archive:
                    fill_archive(work / "inbox" / "done", archive)
                leg.agent = Agent(config, "run", verbose=True)
                legs.append(leg)
        try:
            for leg in legs:
                wait_for(lambda: leg.sandbox.count(path_prefix="/v2/supplier_invoices", method="GET"), 60,
                         f"the start-up sync of the {leg.name} agent", agent=leg.agent)
            time.sleep(SETTLE_AFTER_SYNC)
            for leg in legs:  # the mode each agent says it uses must be the one asked for
                logged = re.search(r"watching .* \((native|polling):", leg.agent.log_path.read_text(errors="replace"))
                if logged is None or logged.group(1) != leg.mode:
                    raise RuntimeError(f"the {leg.name} agent did not log the {leg.mode} mode:\n{leg.agent.tail()}")
            for leg in legs:
                leg.cpu_start = cpu_seconds(leg.agent.pid)
                leg.fine_start = thread_cpu_seconds(leg.agent.pid)
                leg.t0 = time.monotonic()
            print("4 agents started and synced; start-up CPU: "
                  + ", ".join(f"{leg.name} {leg.cpu_start:.2f} s" for leg in legs)
                  + f"; measuring {window:.0f} s idle", flush=True)
            time.sleep(window)
            for leg in legs:
                leg.t1 = time.monotonic()
                leg.cpu = cpu_seconds(leg.agent.pid) - leg.cpu_start
                leg.fine = thread_cpu_seconds(leg.agent.pid) - leg.fine_start
                leg.requests = sum(1 for r in leg.sandbox.request_log() if leg.t0 <= r.started_at <= leg.t1)
                alive = leg.agent.alive()
                print(f"{leg.name:>14}: {leg.cpu:.2f} s CPU (utime+stime; {leg.fine * 1000:.1f} ms by thread "
                      f"schedstat) in {leg.t1 - leg.t0:.1f} s idle ({leg.fine / (leg.t1 - leg.t0) * 100:.3f} % of "
                      f"one core), {leg.requests} requests in the window, still running: {alive}", flush=True)
        finally:
            for leg in legs:
                if leg.agent is not None:
                    leg.agent.stop()

    by = {leg.name: leg for leg in legs}
    figures, ok = [], True
    for mode in ("native", "polling"):
        zero, full = by[f"{mode}/0"], by[f"{mode}/{args.archive}"]
        ratio = full.fine / max(zero.fine, 1e-6)  # fine-grained figures: ticks are too coarse for a ratio
        grows = full.cpu > zero.cpu * 1.5 + 0.05 or full.fine > zero.fine * 1.5 + 0.05
        ok &= zero.cpu < TARGET_CPU and full.cpu < TARGET_CPU and not grows
        figures.append(f"{mode} {full.cpu:.2f} s ({full.fine * 1000:.0f} ms) with {args.archive // 1000}k in done/ "
                       f"vs baseline {zero.cpu:.2f} s ({zero.fine * 1000:.0f} ms) with 0: x{ratio:.2f}")
    requests = sum(leg.requests for leg in legs)
    ok &= requests == 0
    print(f"idle ({today()}, CPU seconds over {window:.0f} s idle): " + "; ".join(figures)
          + f"; {requests} requests in the windows (target < {TARGET_CPU} s each, no growth with the archive, "
          f"0 requests: {verdict(ok)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
