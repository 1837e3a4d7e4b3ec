"""Benchmark 4, memory: peak RSS of the agent uploading N PDFs of 9 MB, vs the same agent idle.

- measured: N PDFs of 9 MB (unique content, real bytes on disk) are put in the inbox, then
  `python -m agent upload` sends them to an in-process sandbox (keep_files = False, so the
  sandbox does not hold 1.8 GB itself). With 9 MB files and Qonto's 15 MB request cap a bulk
  request carries one file, so N requests are expected.
- baseline: `python -m agent run` on an empty inbox, left idle until its start-up sync is done
  and a few seconds more, then stopped with SIGTERM.

Peak RSS is the kernel's own high-water mark: the larger of `ru_maxrss` from wait4() on the
agent process and VmHWM of /proc/<pid>/status polled every 50 ms while it runs (VmRSS is polled
too, as a cross-check). Target: peak under 100 MB while uploading.

    python bench/bench_memory.py [--quick] [--files 200] [--size-mb 9]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (Agent, count_pdfs, proc_status_kb, today, unique_pdf, verdict,  # noqa: E402
                     wait_for, write_config)

from agent.sandbox.server import Sandbox  # noqa: E402

BULK = "/v2/supplier_invoices/bulk"
TARGET_MB = 100.0


def watch(agent: Agent, until: float) -> tuple[int, int]:
    """Poll VmRSS/VmHWM of a running agent every 50 ms until it exits or `until`; (max RSS, last HWM) in kB."""
    max_rss = hwm = 0
    while agent.alive() and time.monotonic() < until:
        max_rss = max(max_rss, proc_status_kb(agent.pid, "VmRSS") or 0)
        hwm = max(hwm, proc_status_kb(agent.pid, "VmHWM") or 0)
        time.sleep(0.05)
    return max_rss, hwm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=None, help="number of PDFs (default 200; 40 with --quick)")
    parser.add_argument("--size-mb", type=float, default=9.0, help="size of each PDF in MB (10^6 bytes)")
    parser.add_argument("--quick", action="store_true", help="fewer files")
    args = parser.parse_args()
    n = args.files or (40 if args.quick else 200)
    size = int(args.size_mb * 1_000_000)

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)

        # --- baseline: the same agent, idle ---------------------------------------------------
        with Sandbox(seed=1, keep_files=False) as sandbox:
            config = write_config(root / "idle", sandbox.base_url)
            agent = Agent(config, "run")
            try:
                wait_for(lambda: sandbox.count(path_prefix="/v2/supplier_invoices", method="GET"), 30,
                         "the start-up sync of `run`", agent=agent)
                idle_poll_rss, idle_hwm = watch(agent, time.monotonic() + 4.0)
            finally:
                code = agent.stop()
            idle_peak = max(agent.maxrss_kb or 0, idle_hwm) / 1024
        sources = f"wait4 ru_maxrss {(agent.maxrss_kb or 0) / 1024:.1f} MB, VmHWM polled {idle_hwm / 1024:.1f} MB"
        print(f"baseline: `run` idle with an empty inbox: peak RSS {idle_peak:.1f} MB ({sources}, VmRSS max "
              f"{idle_poll_rss / 1024:.1f} MB), exit code {code}", flush=True)

        # --- measured: uploading N files of 9 MB --------------------------------------------
        with Sandbox(seed=2, keep_files=False) as sandbox:
            work = root / "upload"
            config = write_config(work, sandbox.base_url, inbox={"settle_seconds": 1.0, "debounce_seconds": 0.5})
            inbox = work / "inbox"
            created = time.monotonic()
            for i in range(n):
                (inbox / f"scan-{i:04d}.pdf").write_bytes(unique_pdf(i, size, tag="M"))
            print(f"wrote {n} PDFs of {size / 1e6:.1f} MB ({n * size / 1e9:.2f} GB) in "
                  f"{time.monotonic() - created:.1f} s", flush=True)
            agent = Agent(config, "upload")
            poll_rss, hwm = watch(agent, time.monotonic() + 280)
            code = agent.wait(30)
            elapsed = time.monotonic() - agent.started
            peak = max(agent.maxrss_kb or 0, hwm) / 1024
            bulk = [r for r in sandbox.request_log() if r.path == BULK]
            done = count_pdfs(inbox / "done")
            invoices = sandbox.invoice_count()
        print(f"agent upload: {n} x {size / 1e6:.1f} MB in {elapsed:.1f} s, {len(bulk)} bulk requests "
              f"(largest body {max((r.body_bytes for r in bulk), default=0) / 1e6:.1f} MB), {done} in done/, "
              f"{invoices} invoices, exit code {code}; peak RSS {peak:.1f} MB (wait4 ru_maxrss "
              f"{(agent.maxrss_kb or 0) / 1024:.1f} MB, VmHWM polled {hwm / 1024:.1f} MB, VmRSS max "
              f"{poll_rss / 1024:.1f} MB)", flush=True)
        if code != 0 or done != n:
            print(f"WARNING: the upload did not file all {n} files cleanly:\n{agent.tail()}", flush=True)

    ok = peak < TARGET_MB and done == n
    print(f"memory ({today()}, {n} x {size / 1e6:g} MB PDFs): peak RSS {peak:.1f} MB uploading vs baseline "
          f"{idle_peak:.1f} MB idle: x{peak / idle_peak:.2f} (+{peak - idle_peak:.1f} MB) "
          f"(target < {TARGET_MB:.0f} MB: {verdict(ok)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
