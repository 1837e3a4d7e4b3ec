"""Run every benchmark, one after the other, and print their final lines together at the end.

Each benchmark runs as its own process (never two at once: they measure time and CPU), its
output shown as it comes. `--quick` passes smaller counts to each (bench_mirror.py gets
`--invoices 200`, as it has no --quick of its own). Exit status 1 when any benchmark missed its
target or failed.

    python bench/run_all.py [--quick] [--only batching,latency,...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ORDER = ("batching", "latency", "mirror", "contention", "memory", "idle", "hashing", "backlog", "profiles")


def command(name: str, quick: bool) -> list[str]:
    cmd = [sys.executable, str(HERE / f"bench_{name}.py")]
    if quick:
        cmd += ["--invoices", "200"] if name == "mirror" else ["--quick"]
    return cmd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts everywhere")
    parser.add_argument("--only", default=",".join(ORDER), help="comma-separated subset of " + ", ".join(ORDER))
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    results: list[tuple[str, int, float, str]] = []
    started_all = time.monotonic()
    for name in names:
        cmd = command(name, args.quick)
        print(f"\n=== {name}: {' '.join(Path(c).name if c == sys.executable else c for c in cmd)}", flush=True)
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line.rstrip("\n"))
        code = proc.wait()
        elapsed = time.monotonic() - started
        final = next((line for line in reversed(lines) if line.startswith(f"{name}")), None)
        if final is None:
            final = next((line for line in reversed(lines) if line.strip()), "(no output)")
        results.append((name, code, elapsed, final))

    print(f"\n=== summary ({datetime.now().isoformat(timespec='seconds')}, "
          f"{'quick' if args.quick else 'full'} run, {time.monotonic() - started_all:.0f} s)")
    for name, code, elapsed, final in results:
        status = "ok" if code == 0 else f"exit {code}"
        print(f"[{status}, {elapsed:.0f} s] {final}")
    return 0 if all(code == 0 for _, code, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
