"""Shared helpers of the benchmarks: config files, the agent as a real process, /proc readings.

Only the benchmarks under bench/ use this module; it imports nothing from tests/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import tomli_w  # noqa: E402

from agent.samples import SampleInvoice, invoice_pdf  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOGIN = "sandbox-org"
SECRET = "sandbox-secret-key"


def today() -> str:
    return date.today().isoformat()


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def write_config(root: Path, base_url: str, **sections: dict[str, Any]) -> Path:
    """A config.toml under `root` pointing at `base_url`; inbox/outbox/state live under `root`.

    Defaults: native events (polling = false), outbox sync every hour (so it stays out of the way
    unless a benchmark is about it); `sections` override any key.
    """
    doc: dict[str, dict[str, Any]] = {
        "qonto": {"base_url": base_url, "login": LOGIN, "secret_key": SECRET, "timeout_seconds": 60},
        "inbox": {"path": "inbox", "polling": False},
        "outbox": {"path": "outbox", "sync_interval_seconds": 3600},
        "state": {"path": "state/ledger.sqlite"},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.toml"
    path.write_text(tomli_w.dumps(doc))
    path.chmod(0o600)
    (root / doc["inbox"]["path"]).mkdir(parents=True, exist_ok=True)
    return path


def agent_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QONTO_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Agent:
    """`python -m agent -c CONFIG <args>` as a real process, its log in a file next to the config."""

    def __init__(self, config: Path, *args: str, log_name: str = "agent.log", verbose: bool = False) -> None:
        self.log_path = config.parent / log_name
        self._log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "agent", "-c", str(config)] + (["-v"] if verbose else []) + list(args)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=agent_env())
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
        deadline = time.monotonic() + timeout
        while (code := self._reap()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent {self.pid} still running after {timeout:.0f} s\n{self.tail()}")
            time.sleep(0.02)
        return code

    def stop(self, timeout: float = 15.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except TimeoutError:
            self.proc.kill()
            return self.wait(10)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


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
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if agent is not None and not agent.alive():
            raise RuntimeError(f"the agent exited ({agent.returncode}) while waiting for {what}\n{agent.tail()}")
        if time.monotonic() > deadline:
            extra = f"\n{agent.tail()}" if agent is not None else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


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
