"""Benchmark 2, drop-to-upload latency: single PDFs dropped one at a time into a running agent.

`python -m agent run` watches an inbox (native events, polling = false) with settle_seconds = 1.0
and debounce_seconds = 0.5, against an in-process sandbox on loopback. Each of N PDFs (~100 KB,
unique content) is written in one write and closed; the bench notes time.monotonic() right after
the close ("last write"), then finds the bulk request carrying that file's idempotency key in the
sandbox's request log, whose `started_at` is time.monotonic() of the same process when the
request reached the sandbox. The next file is dropped once the previous one sits in done/.

The floor is settle + debounce = 1.5 s: a file must be quiet for `settle` before it is ready,
and a lone ready file waits `debounce` for company. Target: p95 within 1 s of the floor.

    python bench/bench_latency.py [--quick] [--files 50]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Agent, percentile, today, unique_pdf, verdict, wait_for, write_config  # noqa: E402

from agent.base.fingerprint import idempotency_key  # noqa: E402
from agent.sandbox.server import Sandbox  # noqa: E402

SETTLE = 1.0
DEBOUNCE = 0.5
BULK = "/v2/supplier_invoices/bulk"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=None, help="number of drops (default 50; 10 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer drops")
    parser.add_argument("--show-log", action="store_true", help="print the agent's verbose log at the end")
    args = parser.parse_args()
    n = args.files or (10 if args.quick else 50)
    floor = SETTLE + DEBOUNCE

    latencies: list[float] = []
    windows: list[tuple[str, float, float]] = []  # (file, last write, arrival)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp, \
            Sandbox(seed=5, analysis_delay_seconds=2.0) as sandbox:
        root = Path(tmp)
        config = write_config(root, sandbox.base_url,
                              inbox={"settle_seconds": SETTLE, "debounce_seconds": DEBOUNCE})
        inbox, done = root / "inbox", root / "inbox" / "done"
        agent = Agent(config, "run", verbose=args.show_log)
        try:
            wait_for(lambda: sandbox.count(path_prefix="/v2/supplier_invoices", method="GET"), 30,
                     "the start-up sync of `run`", agent=agent)
            time.sleep(1.0)
            print(f"{n} single PDFs dropped one at a time into `run` (settle {SETTLE} s, debounce {DEBOUNCE} s, "
                  f"native events); floor settle + debounce = {floor:.2f} s", flush=True)
            for i in range(n):
                data = unique_pdf(i, 100_000, tag="L")
                key = idempotency_key(hashlib.sha256(data).hexdigest())
                name = f"drop-{i:03d}.pdf"
                (inbox / name).write_bytes(data)
                last_write = time.monotonic()

                def arrival() -> float | None:
                    for record in sandbox.request_log():
                        if record.path == BULK and key in record.idempotency_keys:
                            return record.started_at
                    return None

                arrived = wait_for(arrival, 30, f"the upload of {name}", interval=0.01, agent=agent)
                latencies.append(arrived - last_write)
                windows.append((name, last_write, arrived))
                wait_for(lambda: (done / name).exists(), 30, f"{name} in done/", interval=0.01, agent=agent)
                time.sleep(0.1)
            log = sandbox.request_log()
            bulk = [r for r in log if r.path == BULK]
        finally:
            code = agent.stop()
        agent_log = agent.log_path.read_text(errors="replace") if args.show_log else ""

    # What else the agent was doing while a slow file waited (e.g. an outbox sync after uploads).
    for name, wrote, arrived in windows:
        if arrived - wrote > floor + 0.25:
            others = [r for r in log if r.path != BULK and r.started_at < arrived and r.finished_at > wrote]
            what = ", ".join(f"{r.method} {r.path} at +{r.started_at - wrote:.2f} s" for r in others[:5])
            print(f"slow: {name} {arrived - wrote:.2f} s; other requests meanwhile: {len(others)}"
                  + (f" ({what}{', ...' if len(others) > 5 else ''})" if others else ""))
    if agent_log:
        print(agent_log)

    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    print(f"{len(bulk)} bulk requests carrying {sum(r.items for r in bulk)} items; agent exit code {code}")
    print("latencies (s): " + " ".join(f"{x:.2f}" for x in latencies))
    print(f"min {min(latencies):.3f} s, p50 {p50:.3f} s, p95 {p95:.3f} s, max {max(latencies):.3f} s", flush=True)
    ok = p95 <= floor + 1.0
    print(f"latency ({today()}, {n} drops, settle {SETTLE} s + debounce {DEBOUNCE} s): p95 {p95:.2f} s "
          f"(p50 {p50:.2f} s, max {max(latencies):.2f} s) vs baseline floor {floor:.2f} s: "
          f"p95 {p95 - floor:+.2f} s over the floor, x{p95 / floor:.2f} "
          f"(target p95 within 1 s of the floor: {verdict(ok)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
