"""Benchmark: uploads while a big outbox sync runs, against uploads alone, in one run.

`python -m agent run` (a real process) against an in-process sandbox whose every API answer takes
50 ms (storage downloads free), with the client's rate limit lowered so that the sync alone would
use all of it. Twice, each time with a fresh ledger and N unique PDFs already in the inbox:
- alone: the organization is empty, so the start-up sync is one request;
- during a sync: the organization holds M invoices, so the start-up sync lists them and reads
  every attachment for minutes, and the uploads compete with it for the same budget.
Upload throughput is items per second between the first bulk request's arrival and the last bulk
request's answer, from the sandbox's request log. Target: during the sync, uploads keep at least
80% of their throughput alone, no minute passes without an upload request, the sync was still
running when the last upload was answered (it really competed), and it then completes.

    python bench/bench_contention.py [--quick] [--files 2000] [--invoices 3000] [--rate 300]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Agent, conclude, today, unique_pdf, wait_for, write_config  # noqa: E402

from agent.sandbox.faults import Faults  # noqa: E402
from agent.sandbox.server import Sandbox  # noqa: E402

BULK = "/v2/supplier_invoices/bulk"
REQUIRED_SHARE = 0.8
LONGEST_GAP_SECONDS = 60.0


def upload_pass(sandbox: Sandbox, root: Path, files: int, rate: int, tag: str) -> tuple[float, float, bool]:
    """Upload `files` PDFs with `run`; (items per second, longest gap between bulk requests, whether
    the start-up sync was still sending when the last upload was answered)."""
    config = write_config(root, sandbox.base_url,
                          qonto={"max_requests_per_10s": rate, "max_requests_per_10min": rate * 60},
                          inbox={"settle_seconds": 0.3, "debounce_seconds": 0.3, "max_wait_seconds": 1.0},
                          outbox={"sync_interval_seconds": 3600})
    for i in range(files):
        (root / "inbox" / f"{tag}-{i:05d}.pdf").write_bytes(unique_pdf(i, 2_000, tag=tag))
    sandbox.reset_log()
    agent = Agent(config, "run")
    try:
        done = root / "inbox" / "done"
        wait_for(lambda: done.is_dir() and sum(1 for _ in done.iterdir()) == files, 1800,
                 f"{files} files in done/", interval=0.2, agent=agent)
        log = sandbox.request_log()
        synced = wait_for(lambda: re.search(r"synced \d+ invoices .*; cursor ", agent.log_path.read_text()), 1800,
                          "the start-up sync to complete", interval=0.5, agent=agent)
        print(f"  {synced.group(0)}", flush=True)
    finally:
        agent.stop()
    bulk = sorted((r for r in log if r.path == BULK and r.status == 200), key=lambda r: r.started_at)
    items = sum(r.items for r in bulk)
    assert items == files, f"{items} items uploaded for {files} files"
    span = bulk[-1].finished_at - bulk[0].started_at
    gaps = [b.started_at - a.started_at for a, b in zip(bulk, bulk[1:])] or [0.0]
    still_syncing = any(r.path != BULK and r.started_at > bulk[-1].finished_at for r in log)
    return items / span, max(gaps), still_syncing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--files", type=int, default=None, help="PDFs to upload (default 2000; 400 with --quick)")
    parser.add_argument("--invoices", type=int, default=None, help="invoices to sync (default 3000; 1000 quick)")
    parser.add_argument("--rate", type=int, default=300, help="the client's requests per 10 s")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to every API answer")
    args = parser.parse_args()
    files = args.files or (400 if args.quick else 2000)
    invoices = args.invoices or (1000 if args.quick else 3000)

    faults = Faults(latency_seconds=args.latency, storage_latency_seconds=0.0)
    print(f"{files} PDFs, {args.latency * 1000:.0f} ms per API answer, the client's limit "
          f"{args.rate} requests per 10 s", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-contention-") as tmp:
        with Sandbox(seed=11, analysis_delay_seconds=3600.0, faults=faults) as sandbox:  # an empty organization
            alone, alone_gap, _ = upload_pass(sandbox, Path(tmp) / "alone", files, args.rate, "A")
        print(f"alone: {alone:.0f} items/s, longest gap between upload requests {alone_gap:.1f} s", flush=True)
        with Sandbox(seed=11, analysis_delay_seconds=3600.0, faults=faults) as sandbox:
            sandbox.seed(invoices, without_attachment=0.0)
            during, gap, competed = upload_pass(sandbox, Path(tmp) / "during", files, args.rate, "D")
        print(f"during a sync of {invoices} invoices: {during:.0f} items/s, longest gap {gap:.1f} s, "
              f"the sync still running after the last upload: {competed}", flush=True)

    share = during / alone
    problems = [
        *([] if share >= REQUIRED_SHARE else [f"uploads kept {share:.0%} of their throughput"]),
        *([] if gap < LONGEST_GAP_SECONDS else [f"{gap:.0f} s without an upload request"]),
        *([] if competed else ["the sync ended before the uploads: nothing competed; raise --invoices"]),
    ]
    return conclude(f"contention ({today()}, {files} files during a {invoices}-invoice sync, limit {args.rate}/10 s): "
                    f"uploads at {share:.0%} of their throughput alone ({during:.0f} vs {alone:.0f} items/s), "
                    f"longest gap {gap:.1f} s (target >= {REQUIRED_SHARE:.0%}, no gap of {LONGEST_GAP_SECONDS:.0f} s",
                    problems)


if __name__ == "__main__":
    sys.exit(main())
