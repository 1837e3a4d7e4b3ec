"""Shared fixtures: a real sandbox on loopback and agents as real processes (helpers: support.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.sandbox.server import Sandbox
from support import AgentProcess


@pytest.fixture
def sandbox():
    """A sandbox on a free loopback port with short timings suited to tests."""
    with Sandbox(analysis_delay_seconds=0.2, seed=1234) as sb:
        yield sb


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


@pytest.fixture
def mounted(tmp_path):
    """Mount small tmpfs file systems in the test (CI runs as root); skipped, with why, where refused."""
    points: list[Path] = []

    def mount(point: Path, size: str = "2m") -> Path:
        point.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        points.append(point)
        return point

    yield mount
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], check=False)
