"""What only the benchmarks need: /proc readings, peak memory, percentiles, unique PDFs. Config files,
the agent as a process and waiting come from tests/support.py, shared with the tests."""

from __future__ import annotations

import os
import signal
import sys
from datetime import date
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from agent.samples import SampleInvoice, invoice_pdf  # noqa: E402
from support import AgentProcess  # noqa: E402
from support import wait_for as _wait_for  # noqa: E402
from support import write_config as _write_config  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def today() -> str:
    return date.today().isoformat()


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def conclude(final: str, problems: list[str]) -> int:
    """Print the final line (ending in the verdict) and each missed target; the exit status."""
    print(f"{final}: {verdict(not problems)})")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


def write_config(root: Path, base_url: str, **sections: dict[str, Any]) -> Path:
    """tests/support.py's config writer, with the benchmarks' long request timeout."""
    sections.setdefault("qonto", {}).setdefault("timeout_seconds", 60)
    return _write_config(root, base_url, **sections)


class Agent(AgentProcess):
    """The agent as a real process, reaped with wait4 so its peak RSS (ru_maxrss) is kept."""

    def __init__(self, config: Path, *args: str, log_name: str = "agent.log", verbose: bool = False) -> None:
        super().__init__(config, *args, log_name=log_name, verbose=verbose)
        self.pid = self.proc.pid
        self.maxrss_kb: int | None = None
        self.returncode: int | None = None

    def _reap(self) -> int | None:
        """Reap the process with wait4 if it has exited, keeping its peak RSS (ru_maxrss, kB on Linux).

        Never use Popen.poll()/wait() on it: they would reap it first and lose the rusage.
        """
        if self.returncode is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.maxrss_kb = usage.ru_maxrss
                self.returncode = os.waitstatus_to_exitcode(status)
                self.proc.returncode = self.returncode
                self._log.close()
        return self.returncode

    def alive(self) -> bool:
        return self._reap() is None

    def wait(self, timeout: float) -> int:
        """Its exit code, once it exits (an exit code of 0 is falsy: wait on "not alive")."""
        _wait_for(lambda: not self.alive(), timeout, interval=0.02, message=f"agent {self.pid} to exit",
                  on_fail=self.tail)
        return self.returncode

    def stop(self, timeout: float = 15.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except TimeoutError:
            self.proc.kill()
            return self.wait(10)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    # after "pid (comm) ": state is fields[0]; utime is field 14 overall → index 11 here, stime 12
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds(pid: int) -> float:
    """CPU time of a process's live threads in nanosecond resolution (sum of /proc/<pid>/task/*/schedstat).

    Finer than utime + stime (clock ticks of 10 ms) but blind to threads that already exited.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def proc_status_kb(pid: int, key: str) -> int | None:
    """A `kB` value of /proc/<pid>/status (VmRSS, VmHWM...), None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02,
             agent: Agent | None = None) -> Any:
    """tests/support.py's wait, giving up as soon as `agent` exits."""
    def gone() -> str | None:
        return f"the agent exited ({agent.returncode})\n{agent.tail()}" if agent and not agent.alive() else None
    return _wait_for(condition, timeout, interval, what, on_fail=agent.tail if agent else None, give_up=gone)


def count_pdfs(folder: Path) -> int:
    try:
        return sum(1 for entry in os.scandir(folder) if entry.name.endswith(".pdf"))
    except FileNotFoundError:
        return 0


def unique_pdf(index: int, size: int, tag: str = "B") -> bytes:
    """A valid one-page invoice PDF of about `size` bytes whose content is unique to `index`."""
    sample = SampleInvoice(f"Bench Supplier {index % 97} SARL", f"{tag}-{index:06d}", date(2026, 11, 1 + index % 28),
                           (("Bench line", f"{10 + index % 900}.{index % 100:02d}"),))
    base = invoice_pdf(sample)
    if size <= len(base):
        return base
    data = invoice_pdf(sample, padding=size - len(base))
    return data


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
