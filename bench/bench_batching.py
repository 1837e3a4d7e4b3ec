"""Benchmark 1, batching: N PDFs dropped at once, the agent vs one request per file, same run.

Every leg gets a fresh in-process sandbox on loopback adding `--latency` (100 ms) to every answer.

- baseline: a naive sequential uploader written here: for each file, one `requests` POST to
  /v2/supplier_invoices/bulk carrying a single item (file + idempotency key), over a kept-alive
  session; the time is from its first request to its last answer.
- agent `upload`: the files are copied into the inbox (fresh mtimes, as a drop), then
  `python -m agent upload` runs one pass; the time is from process start to its exit.
- agent `run`: `python -m agent run` is started on an empty inbox and left to finish its start-up
  sync; then the N files are written into the inbox; the time is from the first byte written to
  the moment all N sit in done/.

Config: settle_seconds = 1.0, debounce_seconds = 0.5, polling = false, batch_size = 20 (default).
Files: N PDFs of 50-500 KB, sizes drawn with a fixed seed. The final line carries both agent
modes; the target (>= 10x faster and about N/20 bulk requests, i.e. at most 10 % over
ceil(N/20)) must hold for both to be "met".

    python bench/bench_batching.py [--quick] [--files 400] [--latency 0.1] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (Agent, count_pdfs, today, unique_pdf, verdict, wait_for,  # noqa: E402
                     write_config)
from support import LOGIN, SECRET  # noqa: E402

import requests  # noqa: E402

from agent.base.fingerprint import idempotency_key, sha256_file  # noqa: E402
from agent.sandbox.faults import Faults  # noqa: E402
from agent.sandbox.server import Sandbox  # noqa: E402

BULK = "/v2/supplier_invoices/bulk"
SETTLE = 1.0
DEBOUNCE = 0.5


def naive_upload(base_url: str, files: list[Path]) -> float:
    """One request per file, one after the other: the approach batching must beat."""
    session = requests.Session()
    headers = {"Authorization": f"{LOGIN}:{SECRET}"}
    started = time.monotonic()
    for path in files:
        key = idempotency_key(sha256_file(path))
        data = path.read_bytes()
        answer = session.post(f"{base_url}{BULK}", headers=headers, timeout=60, files=[
            ("supplier_invoices[][file]", (path.name, data, "application/pdf")),
            ("supplier_invoices[][idempotency_key]", (None, key)),
        ])
        answer.raise_for_status()
        body = answer.json()
        if len(body.get("supplier_invoices", [])) != 1 or body.get("errors"):
            raise RuntimeError(f"naive upload of {path.name} failed: {body}")
    elapsed = time.monotonic() - started
    session.close()
    return elapsed


def bulk_stats(sandbox: Sandbox) -> tuple[int, int, int]:
    """(bulk requests, items in them, all requests) seen by the sandbox."""
    log = sandbox.request_log()
    bulk = [r for r in log if r.path == BULK]
    return len(bulk), sum(r.items for r in bulk), len(log)


def batch_sizes(sandbox: Sandbox) -> str:
    """Items per bulk request, in order, run-length encoded: "20x19, 13, 7"."""
    sizes = [r.items for r in sorted(sandbox.request_log(), key=lambda r: r.started_at) if r.path == BULK]
    runs: list[list[int]] = []
    for size in sizes:
        if runs and runs[-1][0] == size:
            runs[-1][1] += 1
        else:
            runs.append([size, 1])
    return ", ".join(f"{size}x{count}" if count > 1 else str(size) for size, count in runs)


def timeline(sandbox: Sandbox, since: float) -> str:
    """Where the time went: before the first bulk request, inside requests (server side), between them."""
    bulk = sorted((r for r in sandbox.request_log() if r.path == BULK), key=lambda r: r.started_at)
    if not bulk:
        return "no bulk request"
    inside = sum(r.finished_at - r.started_at for r in bulk)
    between = sum(max(0.0, b.started_at - a.finished_at) for a, b in zip(bulk, bulk[1:]))
    return (f"first bulk request {bulk[0].started_at - since:.2f} s after the start, then {inside:.2f} s inside "
            f"requests (server side, {inside / len(bulk) * 1000:.0f} ms each) and {between:.2f} s between them "
            f"(client side, {between / max(1, len(bulk) - 1) * 1000:.0f} ms each)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=None, help="number of PDFs (default 400; 100 with --quick)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the sandbox adds to every answer")
    parser.add_argument("--seed", type=int, default=1, help="seed of the file sizes")
    parser.add_argument("--quick", action="store_true", help="fewer files")
    args = parser.parse_args()
    n = args.files or (100 if args.quick else 400)
    expected = math.ceil(n / 20)
    allowed = expected + math.ceil(expected / 10)

    rng = random.Random(args.seed)
    sizes = [rng.randint(50_000, 500_000) for _ in range(n)]
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        root = Path(tmp)
        source = root / "source"
        source.mkdir()
        payloads: list[tuple[str, bytes]] = []
        for i, size in enumerate(sizes):
            payloads.append((f"invoice-{i:04d}.pdf", unique_pdf(i, size)))
            (source / payloads[-1][0]).write_bytes(payloads[-1][1])
        files = sorted(source.iterdir())
        total_mb = sum(sizes) / 1e6
        print(f"{n} PDFs, {total_mb:.0f} MB in all (50-500 KB, seed {args.seed}), sandbox latency "
              f"{args.latency * 1000:.0f} ms per request, settle {SETTLE} s, debounce {DEBOUNCE} s", flush=True)

        # --- baseline: one request per file ---------------------------------------------------
        with Sandbox(seed=1, keep_files=False, faults=Faults(latency_seconds=args.latency)) as sandbox:
            base_started = time.monotonic()
            baseline = naive_upload(sandbox.base_url, files)
            base_timeline = timeline(sandbox, base_started)
            base_bulk, base_items, base_all = bulk_stats(sandbox)
            assert sandbox.invoice_count() == n, sandbox.invoice_count()
        print(f"baseline (sequential, 1 file per request): {baseline:.2f} s, {base_bulk} requests, "
              f"{base_items} items; {base_timeline}", flush=True)

        # --- agent `upload`: one pass over the dropped files ------------------------------------
        with Sandbox(seed=2, keep_files=False, faults=Faults(latency_seconds=args.latency)) as sandbox:
            work = root / "upload"
            config = write_config(work, sandbox.base_url,
                                  inbox={"settle_seconds": SETTLE, "debounce_seconds": DEBOUNCE})
            for path in files:
                shutil.copyfile(path, work / "inbox" / path.name)
            agent = Agent(config, "upload")
            code = agent.wait(240)
            upload_time = time.monotonic() - agent.started
            up_bulk, up_items, up_all = bulk_stats(sandbox)
            up_done = count_pdfs(work / "inbox" / "done")
            up_invoices = sandbox.invoice_count()
            up_timeline = timeline(sandbox, agent.started)
            up_sizes = batch_sizes(sandbox)
        print(f"agent upload: {upload_time:.2f} s (process start to exit, exit code {code}), {up_bulk} bulk "
              f"requests with {up_items} items (items per request: {up_sizes}), {up_all} requests in all, "
              f"{up_done} files in done/, "
              f"{up_invoices} invoices; {up_timeline}", flush=True)
        if code != 0 or up_done != n or up_invoices != n:
            print(f"WARNING: agent upload did not file all {n} files cleanly:\n{agent.tail()}", flush=True)

        # --- agent `run`: files dropped into a running agent's inbox ---------------------------
        with Sandbox(seed=3, keep_files=False, faults=Faults(latency_seconds=args.latency)) as sandbox:
            work = root / "run"
            config = write_config(work, sandbox.base_url,
                                  inbox={"settle_seconds": SETTLE, "debounce_seconds": DEBOUNCE})
            inbox, done = work / "inbox", work / "inbox" / "done"
            agent = Agent(config, "run")
            try:
                wait_for(lambda: sandbox.count(path_prefix="/v2/supplier_invoices", method="GET"), 30,
                         "the start-up sync of `run`", agent=agent)
                time.sleep(0.5)
                sandbox.reset_log()
                started = time.monotonic()
                for name, data in payloads:
                    (inbox / name).write_bytes(data)
                dropped = time.monotonic() - started
                wait_for(lambda: count_pdfs(done) >= n, 240, f"all {n} files in done/", agent=agent)
                run_time = time.monotonic() - started
                run_bulk, run_items, run_all = bulk_stats(sandbox)
                run_invoices = sandbox.invoice_count()
                run_timeline = timeline(sandbox, started)
                run_sizes = batch_sizes(sandbox)
            finally:
                agent.stop()
        print(f"agent run: {run_time:.2f} s from the first byte dropped to all {n} in done/ (the drop itself "
              f"took {dropped:.2f} s), {run_bulk} bulk requests with {run_items} items (items per request: "
              f"{run_sizes}), {run_all} requests "
              f"in all, {run_invoices} invoices; {run_timeline}", flush=True)

    speed_run = baseline / run_time
    speed_upload = baseline / upload_time
    ok = (speed_run >= 10 and speed_upload >= 10 and run_bulk <= allowed and up_bulk <= allowed
          and up_done == n and run_invoices == n)
    print(f"batching ({today()}, {n} PDFs, {args.latency * 1000:.0f} ms latency): agent run {run_time:.1f} s / "
          f"{run_bulk} requests, upload {upload_time:.1f} s / {up_bulk} requests vs baseline {baseline:.1f} s / "
          f"{base_bulk} requests: run {speed_run:.1f}x, upload {speed_upload:.1f}x faster "
          f"(target >=10x and ~N/20={expected} requests (<= {allowed}): {verdict(ok)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
