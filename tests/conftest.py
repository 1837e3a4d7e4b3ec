"""Shared fixtures: a real sandbox on loopback, real config files, the agent as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import tomli_w

from agent.samples import page_pdf
from agent.sandbox.server import Sandbox

REPO = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
             message: str = "condition", on_fail: Callable[[], str] | None = None) -> Any:
    """Poll `condition` until it returns something truthy; fail with context after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_fail() if on_fail else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {message}\n{extra}")
        time.sleep(interval)


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


@pytest.fixture
def sandbox():
    """A sandbox on a free loopback port with short timings suited to tests."""
    with Sandbox(analysis_delay_seconds=0.2, seed=1234) as sb:
        yield sb


def make_config(tmp_path: Path, sandbox: Sandbox, **sections: dict[str, Any]) -> Path:
    """Write a config.toml pointing at `sandbox`, with fast test timings; `sections` override keys."""
    doc: dict[str, dict[str, Any]] = {
        "qonto": {"base_url": sandbox.base_url, "login": "sandbox-org", "secret_key": "sandbox-secret-key",
                  "timeout_seconds": 10},
        "inbox": {"path": "inbox", "settle_seconds": 0.5, "debounce_seconds": 0.3, "max_wait_seconds": 3,
                  "poll_interval_seconds": 0.5, "polling": False},
        "outbox": {"path": "outbox", "sync_interval_seconds": 3600},
        "state": {"path": "state/ledger.sqlite"},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(doc))
    path.chmod(0o600)
    (tmp_path / "inbox").mkdir(exist_ok=True)
    return path


def agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QONTO_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def run_agent(config: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess:
    """Run one `qonto-agent` command to completion as a real process."""
    return subprocess.run([sys.executable, "-m", "agent", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, env=env or agent_env(), cwd=REPO)


class AgentProcess:
    """A long-running `qonto-agent` process whose log goes to a file a failing test can print."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None, log_name: str = "agent.log"):
        self.log_path = config.parent / log_name
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", "-c", str(config), "-v", *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env or agent_env(), cwd=REPO)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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


@pytest.fixture
def agents():
    """Start agents with `agents(config, "run")`; every one is stopped at the end of the test."""
    started: list[AgentProcess] = []

    def start(config: Path, *args: str, **kw) -> AgentProcess:
        proc = AgentProcess(config, *args, **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.kill()

