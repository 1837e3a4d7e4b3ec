"""Test support shared by the tests and the benchmarks: config files, the agent as a real process,
waiting on conditions, sample PDFs. Public names only; it imports nothing from pytest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import tomli_w

from agent.samples import page_pdf

REPO = Path(__file__).resolve().parent.parent
LOGIN = "sandbox-org"
SECRET = "sandbox-secret-key"


# Inbox timings that keep end-to-end tests quick.
FAST_INBOX = {"settle_seconds": 0.5, "debounce_seconds": 0.3, "max_wait_seconds": 3, "poll_interval_seconds": 0.5}
STATUS_SHOWN = (0, 5, 6)  # `status` answered: healthy, `run` expected but not alive, a person needed


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
             message: str = "condition", on_fail: Callable[[], str] | None = None,
             give_up: Callable[[], str | None] | None = None) -> Any:
    """Poll `condition` until it returns something truthy; raise TimeoutError with context after
    `timeout`, or RuntimeError as soon as `give_up()` says why waiting is pointless."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if give_up is not None and (why := give_up()):
            raise RuntimeError(f"{why} while waiting for {message}\n{on_fail() if on_fail else ''}")
        if time.monotonic() > deadline:
            extra = on_fail() if on_fail else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {message}\n{extra}")
        time.sleep(interval)


def sidecar_of(error_folder: Path, name: str, timeout: float = 10.0) -> dict:
    """A refused file's `.error.json`, waited for: the agent moves the file first, then writes the
    sidecar for the name it took (atomically, so once it exists it is whole)."""
    path = error_folder / f"{name}.error.json"
    return wait_for(lambda: path.exists() and json.loads(path.read_text(encoding="utf-8")), timeout,
                    message=path.name)


def pdf_bytes(label: str, size: int = 0) -> bytes:
    """A small valid PDF whose bytes differ by `label`, padded (inside a comment) to `size`."""
    base = page_pdf([(72, 720, 12, label)])
    if size <= len(base):
        return base
    return page_pdf([(72, 720, 12, label)], b"%" + b"x" * (size - len(base) - 2) + b"\n")


def write_pdf(path: Path, label: str | None = None, size: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pdf_bytes(label or path.name, size))
    return path


def write_config(root: Path, base_url: str, **sections: dict[str, Any]) -> Path:
    """`root/config.toml` pointing at `base_url`, inbox/outbox/state and the rate budget's file under
    `root`, native events, the outbox sync hourly (out of the way unless wanted); `sections` override any key."""
    doc: dict[str, dict[str, Any]] = {
        "qonto": {"base_url": base_url, "login": LOGIN, "secret_key": SECRET,
                  "rate_limit_file": "state/rate-limit.sqlite"},  # not the host's: tests run side by side
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
    (root / "inbox").mkdir(exist_ok=True)  # the default inbox; a test of a missing one names another
    return path


def make_config(tmp_path: Path, sandbox: Any, **sections: dict[str, Any]) -> Path:
    """A config.toml pointing at `sandbox` (anything with a `base_url`), with fast test timings; `sections` override keys."""
    fast: dict[str, dict[str, Any]] = {"qonto": {"timeout_seconds": 10}, "inbox": dict(FAST_INBOX)}
    for name, values in sections.items():
        fast.setdefault(name, {}).update(values)
    return write_config(tmp_path, sandbox.base_url, **fast)


def write_profiles_config(root: Path, base_url: str, organizations: dict[str, tuple[str, str]],
                          **sections: dict[str, Any]) -> Path:
    """`root/config.toml` with one profile per organization (`name: (login, secret)`), each with its
    own `root/<name>/inbox`, `root/<name>/outbox` and ledger `root/state/<name>.sqlite`; the shared
    sections have fast test timings, native events and an hourly sync; `sections` override them."""
    doc: dict[str, Any] = {
        "qonto": {"base_url": base_url, "timeout_seconds": 10, "rate_limit_file": "state/rate-limit.sqlite"},
        "inbox": {"polling": False, **FAST_INBOX},
        "outbox": {"sync_interval_seconds": 3600},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    doc["profiles"] = {
        name: {"qonto": {"login": login, "secret_key": secret}, "inbox": {"path": f"{name}/inbox"},
               "outbox": {"path": f"{name}/outbox"}, "state": {"path": f"state/{name}.sqlite"}}
        for name, (login, secret) in organizations.items()}
    for name in organizations:
        (root / name / "inbox").mkdir(parents=True, exist_ok=True)
    path = root / "config.toml"
    path.write_text(tomli_w.dumps(doc))
    path.chmod(0o600)
    return path


def agent_env(**extra: str) -> dict[str, str]:
    """This environment without any QONTO_* variable, unbuffered, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QONTO_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def agent_command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "agent", "-c", str(config), *args]


def run_agent(config: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess:
    """Run one `qonto-agent` command to completion as a real process."""
    return subprocess.run(agent_command(config, *args), capture_output=True, text=True, timeout=timeout,
                          env=env or agent_env(), cwd=REPO)


class AgentProcess:
    """A long-running `qonto-agent` process whose log goes to a file a failing test can print."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None, log_name: str = "agent.log",
                 verbose: bool = True):
        self.log_path = config.parent / log_name
        self._log = self.log_path.open("ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(agent_command(config, *(["-v"] if verbose else []), *args),
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env or agent_env(), cwd=REPO)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log().splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9, for real."""
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()
