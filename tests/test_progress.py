"""The progress line of `upload` and `sync` on a real pseudo-terminal: rate, time left, why it waits, and log
lines that stay whole on their own rows; nothing of it when stderr is a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest

from support import REPO, agent_command, agent_env, make_config, run_agent, write_pdf

FILES = 200
BAR = re.compile(r"(\d+)/(\S+) (files|invoices) \[\d\d:\d\d<(\S+), (\S+) \3/s(?:, ([^\]]*))?\]")
LOG = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")

pytestmark = pytest.mark.skipif(os.name != "posix", reason="pseudo-terminals are POSIX")


def _inbox(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    for i in range(FILES):
        write_pdf(tmp_path / "inbox" / f"invoice-{i:03}.pdf")
    return config


def _run_on_terminal(config, *args: str) -> bytes:
    """Run the agent with stdout and stderr on a 120-column pseudo-terminal; all it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(agent_command(config, *args), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=agent_env(), cwd=REPO)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the agent closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        proc.wait(10)
    assert proc.returncode == 0, out.decode(errors="replace")
    return bytes(out)


def _screen(raw: bytes) -> tuple[list[str], list[str]]:
    """(the rows left on screen, every state the current row went through), like a terminal does
    with carriage returns and newlines; other control sequences are dropped."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode(errors="replace"))
    rows, frames, row, col = [], [], [], 0
    for ch in text:
        if ch in "\r\n":
            frames.append("".join(row).rstrip())
            if ch == "\n":
                rows.append(frames[-1])
                row = []
            col = 0
            continue
        if col < len(row):
            row[col] = ch
        else:
            row.append(ch)
        col += 1
    frames.append("".join(row).rstrip())
    rows.append(frames[-1])
    return rows, frames


def _assert_progress(raw: bytes, unit: str, total: int, first_why: str) -> None:
    """A line says why it waits before anything is done, then shows a rate and a time left; it
    ends complete; every log line is whole on its own row."""
    rows, frames = _screen(raw)
    screen = "\n".join(rows)
    bars = [m for m in map(BAR.search, frames) if m and m[3] == unit]
    assert any(m[1] == "0" and first_why in (m[6] or "") for m in bars), screen  # why 0/N waits
    working = [m for m in bars if 0 < int(m[1]) < total and m[4] != "?" and m[5] != "?"]
    assert working, screen  # a rate and a time left while it works
    assert any(r.startswith(f"{total}/{total} {unit} [") for r in rows), screen  # the bar stays, complete

    logs = [r for r in rows if LOG.search(r)]
    assert len(logs) > 20, screen  # -v: lines were logged while the bar was shown
    for row in logs:
        assert LOG.match(row), f"something glued before a log line: {row!r}"
        assert not BAR.search(row) and f" {unit}/s" not in row and f" {unit} [" not in row, f"progress glued to a log line: {row!r}"


def test_upload_shows_a_progress_line_that_log_lines_never_break(tmp_path, sandbox):
    config = _inbox(tmp_path, sandbox)
    raw = _run_on_terminal(config, "-v", "upload")
    assert len(list((tmp_path / "inbox" / "done").rglob("*.pdf"))) == FILES
    _assert_progress(raw, "files", FILES, "settling")
    assert b"upload pass: 200 uploaded" in raw


def test_sync_shows_a_progress_line_that_log_lines_never_break(tmp_path, sandbox):
    sandbox.seed(150, without_attachment=0.0)
    config = make_config(tmp_path, sandbox)
    raw = _run_on_terminal(config, "-v", "sync")
    _assert_progress(raw, "invoices", 150, "listing invoices")
    assert b"synced 150 invoices" in raw


def test_no_progress_output_off_a_terminal(tmp_path, sandbox):
    config = _inbox(tmp_path, sandbox)
    done = run_agent(config, "-v", "upload")
    assert done.returncode == 0, done.stderr
    assert "upload pass: 200 uploaded" in done.stderr
    for stream in (done.stdout, done.stderr):
        assert "files/s" not in stream and "\r" not in stream and not BAR.search(stream)
    for line in done.stderr.splitlines():
        assert LOG.match(line), line
