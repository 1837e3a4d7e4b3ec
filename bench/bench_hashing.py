"""Benchmark 6, hashing: throughput of the fingerprint (`agent.fingerprint.sha256_file`) vs sha256sum.

1 GB of files (8 x 128 MB of random bytes; 4 x 64 MB with --quick) is written once to a temporary
folder, then read once in full so both contenders read from the page cache. Then, for each of
`--rounds` rounds (3 by default), `sha256sum` hashes all the files in one subprocess and
`sha256_file` hashes them one after the other in this process (single-threaded both); the order of
the two alternates from round to round. Figures are medians over the rounds (best in brackets);
digests must agree. Target: the fingerprint reaches at least 80 % of sha256sum's throughput.

    python bench/bench_hashing.py [--quick] [--files 8] [--mb 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import today, verdict  # noqa: E402

from agent.base.fingerprint import CHUNK, sha256_file  # noqa: E402

TARGET = 0.80
MiB = 1 << 20


def write_files(folder: Path, count: int, mib: int) -> list[Path]:
    block = os.urandom(16 * MiB)
    files = []
    for i in range(count):
        path = folder / f"blob-{i}.pdf"
        with open(path, "wb") as fh:
            for j in range(mib // 16):
                fh.write(i.to_bytes(4, "big") + j.to_bytes(4, "big") + block[8:])
        files.append(path)
    return files


def warm(files: list[Path]) -> None:
    for path in files:
        with open(path, "rb", buffering=0) as fh:
            while fh.read(8 * MiB):
                pass


def run_sha256sum(files: list[Path]) -> tuple[float, dict[str, str]]:
    started = time.perf_counter()
    out = subprocess.run(["sha256sum", *map(str, files)], capture_output=True, text=True, check=True).stdout
    elapsed = time.perf_counter() - started
    digests = {}
    for line in out.splitlines():
        digest, name = line.split(maxsplit=1)
        digests[name.lstrip("*")] = digest
    return elapsed, digests


def run_fingerprint(files: list[Path]) -> tuple[float, dict[str, str]]:
    started = time.perf_counter()
    digests = {str(path): sha256_file(path) for path in files}
    return time.perf_counter() - started, digests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=None, help="number of files (default 8; 4 with --quick)")
    parser.add_argument("--mb", type=int, default=None, help="MiB per file, a multiple of 16 (default 128; 64 quick)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="256 MiB instead of 1 GiB")
    args = parser.parse_args()
    count = args.files or (4 if args.quick else 8)
    mib = args.mb or (64 if args.quick else 128)
    total = count * mib * MiB

    with tempfile.TemporaryDirectory(prefix="bench-hashing-") as tmp:
        files = write_files(Path(tmp), count, mib)
        warm(files)
        print(f"{count} files x {mib} MiB = {total / 2**30:.2f} GiB, warm in the page cache; "
              f"fingerprint chunk {CHUNK // 1024} KiB; {args.rounds} rounds", flush=True)
        ours: list[float] = []
        theirs: list[float] = []
        for round_ in range(args.rounds):
            contenders = [("sha256sum", run_sha256sum, theirs), ("sha256_file", run_fingerprint, ours)]
            if round_ % 2:
                contenders.reverse()
            digests = []
            for name, run, times in contenders:
                elapsed, digest = run(files)
                times.append(elapsed)
                digests.append(digest)
                print(f"round {round_ + 1}: {name:>11} {elapsed:.2f} s, {total / elapsed / 1e6:.0f} MB/s", flush=True)
            if digests[0] != digests[1]:
                raise SystemExit(f"digests differ: {digests}")

    ours_mbs = total / statistics.median(ours) / 1e6
    theirs_mbs = total / statistics.median(theirs) / 1e6
    best_ours, best_theirs = total / min(ours) / 1e6, total / min(theirs) / 1e6
    ratio = ours_mbs / theirs_mbs
    ok = ratio >= TARGET
    print(f"hashing ({today()}, {total / 2**30:.2f} GiB from page cache): sha256_file {ours_mbs:.0f} MB/s "
          f"(best {best_ours:.0f}) vs baseline sha256sum {theirs_mbs:.0f} MB/s (best {best_theirs:.0f}): "
          f"{ratio * 100:.0f} % (target >= {TARGET * 100:.0f} %: {verdict(ok)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
