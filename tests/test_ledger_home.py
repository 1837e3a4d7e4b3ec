"""The ledger as a file, met by real processes: one per configuration whatever HOME is, an older
per-user ledger adopted once, and a ledger deleted, replaced, locked, corrupt or unwritable said
in one sentence with a non-zero exit (never a traceback, never exit 0)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from support import agent_env, make_config, run_agent, wait_for, write_pdf

from agent.config import load
from agent.state.ledger import Ledger, UploadOutcome


def home_env(root: Path, name: str) -> dict[str, str]:
    """The agent's environment as another user would have it: its own HOME, no XDG_STATE_HOME."""
    home = root / "homes" / name
    home.mkdir(parents=True, exist_ok=True)
    env = agent_env(HOME=str(home))
    for var in ("XDG_STATE_HOME", "STATE_DIRECTORY"):
        env.pop(var, None)
    return env


def uploaded_files(config: Path, env: dict[str, str]) -> set[str]:
    result = run_agent(config, "status", "--json", env=env)
    assert result.returncode == 0, result.stderr  # `run` alive (or never started), nothing in error/
    return {u["file"] for u in json.loads(result.stdout)["recent_uploads"]}


def started(agent, config: Path, env: dict[str, str] | None = None) -> None:
    """Wait until `run` has written its first heartbeat."""
    def alive() -> bool:
        result = run_agent(config, "status", "--json", env=env)
        assert result.returncode == 0, result.stderr  # alive, or no heartbeat yet: nothing expected of it
        return json.loads(result.stdout)["run_alive"]
    wait_for(alive, message="run's first heartbeat", on_fail=agent.tail,
             give_up=lambda: agent.proc.poll() is not None and "the agent exited")


def test_run_upload_and_status_under_different_homes_share_one_ledger(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, state={"path": ""})
    agent = agents(config, "run", env=home_env(tmp_path, "service"))
    write_pdf(tmp_path / "inbox" / "from-run.pdf")
    wait_for(lambda: "from-run.pdf" in uploaded_files(config, home_env(tmp_path, "alice")),
             message="status under another HOME sees the upload of run", on_fail=agent.tail,
             give_up=lambda: agent.proc.poll() is not None and "the agent exited")
    assert agent.stop() == 0

    write_pdf(tmp_path / "inbox" / "from-upload.pdf")
    result = run_agent(config, "upload", env=home_env(tmp_path, "bob"))
    assert result.returncode == 0, result.stderr
    assert uploaded_files(config, home_env(tmp_path, "carol")) == {"from-run.pdf", "from-upload.pdf"}
    assert (tmp_path / "config.ledger.sqlite").is_file()
    assert not list((tmp_path / "homes").rglob("*.sqlite"))  # nothing per user


def test_an_older_per_user_ledger_is_adopted_once(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox, state={"path": ""})
    env = home_env(tmp_path, "alice")
    cfg = load(config, env=env)
    assert cfg.previous_ledger is not None and str(cfg.previous_ledger).startswith(env["HOME"])
    old = Ledger(cfg.previous_ledger)
    old.begin_attempt("a" * 64, "key-1", "old.pdf", 10, None)
    old.record_uploaded("a" * 64, "inv-1")
    old.close()

    first = run_agent(config, "status", "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert [u["file"] for u in json.loads(first.stdout)["recent_uploads"]] == ["old.pdf"]
    assert "moved to one ledger per configuration" in first.stderr
    assert cfg.state.path == tmp_path / "config.ledger.sqlite" and cfg.state.path.is_file()

    again = run_agent(config, "status", "--json", env=env)  # adopted once: no second copy, no second line
    assert "moved to one ledger" not in again.stderr
    assert uploaded_files(config, home_env(tmp_path, "bob")) == {"old.pdf"}


def test_systemd_unit_has_a_state_directory(tmp_path):
    result = run_agent(tmp_path / "config.toml", "init", "--no-input", "--systemd")
    assert result.returncode == 0, result.stderr
    assert "StateDirectory=qonto-agent" in (tmp_path / "qonto-agent.service").read_text()
    cfg = load(tmp_path / "config.toml", env={"STATE_DIRECTORY": "/var/lib/qonto-agent"}, need_credentials=False)
    assert cfg.state.path.parent == Path("/var/lib/qonto-agent")


def _ended(agent, within: float) -> int:
    try:
        return agent.proc.wait(within)
    except Exception:  # noqa: BLE001 - the log says more than the timeout
        raise AssertionError(f"run did not exit within {within:.0f} s\n{agent.tail()}") from None


def test_run_stops_when_its_ledger_is_deleted(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox)
    agent = agents(config, "run")
    started(agent, config)
    ledger = tmp_path / "state" / "ledger.sqlite"
    ledger.unlink()
    t0 = time.monotonic()
    assert _ended(agent, 15) == 2
    assert time.monotonic() - t0 < 15
    log = agent.log()
    assert f"the ledger {ledger} was deleted while the agent was running" in log
    assert "Traceback" not in log


def test_run_stops_when_its_ledger_is_replaced(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox)
    agent = agents(config, "run")
    started(agent, config)
    ledger = tmp_path / "state" / "ledger.sqlite"
    copy = ledger.with_name("copy.sqlite")
    src = sqlite3.connect(ledger)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.close()
    os.replace(copy, ledger)
    assert _ended(agent, 15) == 2
    assert f"the ledger {ledger} was replaced by another file while the agent was running" in agent.log()


def _hold_exclusive(path: Path, seconds: float, held: threading.Event) -> threading.Thread:
    def hold() -> None:
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        db.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        db.execute("ROLLBACK")
        db.close()
    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow  # over 10 s; keeps the default run near 10 minutes on 2 cores
def test_run_waits_out_a_short_lock_and_goes_on(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox)
    agent = agents(config, "run")
    started(agent, config)
    held = threading.Event()
    thread = _hold_exclusive(tmp_path / "state" / "ledger.sqlite", 8, held)
    assert held.wait(10)
    write_pdf(tmp_path / "inbox" / "during-lock.pdf")
    thread.join(20)
    wait_for(lambda: "during-lock.pdf" in uploaded_files(config, agent_env()), timeout=30,
             message="the upload once the lock is released", on_fail=agent.tail,
             give_up=lambda: agent.proc.poll() is not None and "the agent exited")
    assert agent.proc.poll() is None
    assert agent.stop() == 0


@pytest.mark.slow
def test_run_never_exits_0_when_the_ledger_stays_locked_40_s(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox)
    agent = agents(config, "run")
    started(agent, config)
    held = threading.Event()
    ledger = tmp_path / "state" / "ledger.sqlite"
    thread = _hold_exclusive(ledger, 40, held)
    assert held.wait(10)
    write_pdf(tmp_path / "inbox" / "during-lock.pdf")
    code = _ended(agent, 60)
    thread.join(60)
    assert code == 3, agent.tail()
    assert f"the ledger {ledger} stayed locked by another process for more than 30 s" in agent.log()
    result = run_agent(config, "upload")  # started again, it uploads what waited
    assert result.returncode == 0, result.stderr
    assert "during-lock.pdf" in uploaded_files(config, agent_env())


@pytest.mark.parametrize("content", [os.urandom(4096), b"not a database, just some text\n" * 40],
                         ids=["random-bytes", "text"])
@pytest.mark.parametrize("command", ["status", "upload", "run"])
def test_a_corrupt_ledger_is_one_sentence_and_exit_2(tmp_path, sandbox, command, content):
    config = make_config(tmp_path, sandbox)
    ledger = tmp_path / "state" / "ledger.sqlite"
    ledger.parent.mkdir()
    ledger.write_bytes(content)
    result = run_agent(config, command, timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"the ledger {ledger} is not a valid database" in result.stderr
    assert "move it aside" in result.stderr and "Traceback" not in result.stderr
    assert ledger.read_bytes() == content  # left for a person to look at


@pytest.mark.parametrize("command", ["upload", "run"])
def test_a_state_folder_that_cannot_be_created_is_one_sentence_and_exit_2(tmp_path, sandbox, command):
    (tmp_path / "blocker").write_text("a file where the state folder should be\n")
    config = make_config(tmp_path, sandbox, state={"path": "blocker/state/ledger.sqlite"})
    result = run_agent(config, command, timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"cannot create or write the state folder {tmp_path / 'blocker' / 'state'}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_ledger_that_cannot_be_opened_is_one_sentence_and_exit_2(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    (tmp_path / "state" / "ledger.sqlite").mkdir(parents=True)  # a folder where the file should be
    for command in ("status", "upload"):
        result = run_agent(config, command, timeout=30)
        assert result.returncode == 2, result.stderr
        assert "cannot open or write the ledger" in result.stderr and "Traceback" not in result.stderr


def test_check_same_file_is_quiet_while_the_file_stays(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.beat(None)
    ledger.check_same_file()
    assert ledger.recent(UploadOutcome.UPLOADED) == []
    ledger.close()


def test_only_the_file_s_troubles_become_sentences(tmp_path):
    from agent.base.errors import LedgerBusy, LedgerError
    from agent.state.dbfile import translated
    with pytest.raises(sqlite3.IntegrityError):  # a bug in a statement keeps its traceback
        with translated(tmp_path / "l.sqlite"):
            raise sqlite3.IntegrityError("UNIQUE constraint failed: uploads.sha256")
    with pytest.raises(LedgerBusy) as busy:
        with translated(tmp_path / "l.sqlite"):
            raise sqlite3.OperationalError("database is locked")
    assert busy.value.retryable
    with pytest.raises(LedgerError) as bad:
        with translated(tmp_path / "l.sqlite"):
            raise sqlite3.DatabaseError("database disk image is malformed")
    assert not bad.value.retryable and "is not a valid database" in str(bad.value)
