"""Operations a person relies on: `check` as a doctor, `init` whole or not at all, file names that
cannot forge log lines, clean retries from error/, interrupts. Real processes, the real sandbox."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from support import make_config, run_agent, wait_for, write_pdf

from agent.sandbox.faults import Faults
from agent.sandbox.server import Sandbox

FORGED = "x.pdf\n2026-12-04 12:00:00 ERROR fake"


def _no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


# --- init -----------------------------------------------------------------------------------------

def test_init_into_a_folder_it_cannot_write_exits_2_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    config = blocker / "sub" / "config.toml"
    result = run_agent(config, "init", "--no-input")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot write" in result.stderr and "choose a folder you can write to" in result.stderr
    _no_traceback(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_init_whose_inbox_cannot_be_made_leaves_no_configuration(tmp_path):
    (tmp_path / "blocker").write_text("")
    config = tmp_path / "config.toml"
    result = run_agent(config, "init", "--no-input", "--inbox", str(tmp_path / "blocker" / "inbox"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot create the folder" in result.stderr
    _no_traceback(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


# --- names ----------------------------------------------------------------------------------------

def test_names_with_control_characters_are_one_escaped_log_line_and_one_status_line(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    taken = "y\n2026-12-04 12:00:00 ERROR fake\x1b[31m.pdf"  # a PDF: uploaded, then listed by status
    write_pdf(tmp_path / "inbox" / FORGED, label="forged")  # not a PDF name: left where it is, said once
    write_pdf(tmp_path / "inbox" / taken, label="taken")
    result = run_agent(config, "upload")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not any(line.startswith("2026-12-04 12:00:00 ERROR fake") for line in lines), result.stderr
    assert "\x1b" not in result.stderr, result.stderr
    assert [line for line in lines if "x.pdf" in line] == \
        [line for line in lines if "x.pdf\\n2026-12-04 12:00:00 ERROR fake is left in the inbox" in line], result.stderr
    assert len([line for line in lines if "x.pdf" in line]) == 1, result.stderr
    uploaded = [line for line in lines if "y\\n2026" in line]
    assert len(uploaded) == 1 and "ERROR fake\\x1b[31m.pdf as invoice" in uploaded[0], result.stderr
    status = run_agent(config, "status")
    assert status.returncode == 0, status.stderr  # no `run` expected, nothing in error/
    assert not any(line.startswith("2026-12-04 12:00:00 ERROR fake") for line in status.stdout.splitlines())
    assert "\x1b" not in status.stdout
    assert "x.pdf\\n2026-12-04 12:00:00 ERROR fake" in status.stdout, status.stdout
    assert "y\\n2026-12-04 12:00:00 ERROR fake\\x1b[31m.pdf" in status.stdout, status.stdout


# --- check ----------------------------------------------------------------------------------------

def _check(config):
    result = run_agent(config, "check")
    _no_traceback(result)
    return result


def test_check_of_a_healthy_set_up_exits_0_and_leaves_nothing(tmp_path, sandbox):
    sandbox.seed(3)
    # the host's rate budget is shared state that `check`'s requests count in: kept out of the folder watched
    config = make_config(tmp_path / "setup", sandbox, qonto={"rate_limit_file": str(tmp_path / "budget.sqlite")})
    tmp_path = tmp_path / "setup"
    (tmp_path / "outbox").mkdir()
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = _check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Sandbox Company SAS" in result.stdout and "read access to invoices and attachments" in result.stdout
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_check_says_the_inbox_is_missing(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox, inbox={"path": "no-such-inbox"})
    result = _check(config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no-such-inbox does not exist: create the folder" in result.stderr


def test_check_says_the_outbox_cannot_be_written(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    (tmp_path / "outbox").write_text("a file where the outbox should be")
    result = _check(config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is a file, not a folder" in result.stderr and "[outbox] path" in result.stderr


def test_check_says_the_state_folder_cannot_be_made(tmp_path, sandbox):
    (tmp_path / "blocker").write_text("")
    config = make_config(tmp_path, sandbox, state={"path": str(tmp_path / "blocker" / "state" / "ledger.sqlite")})
    result = _check(config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the ledger's folder" in result.stderr and "[state] path" in result.stderr


def test_check_says_an_unwritable_inbox_subfolder(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    (tmp_path / "inbox" / "done").write_text("")
    result = _check(config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is a link or a file, not a folder" in result.stderr


def test_check_says_a_read_only_outbox(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(outbox)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip()}")
    try:
        result = _check(config)
    finally:
        subprocess.run(["umount", str(outbox)], check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot write in the outbox" in result.stderr and "Read-only file system" in result.stderr


# --- retry ----------------------------------------------------------------------------------------

def test_a_file_moved_back_from_error_and_uploaded_loses_its_sidecar_and_its_last_error(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    inbox = tmp_path / "inbox"
    write_pdf(inbox / "retry.pdf", label="retry me")
    write_pdf(inbox / "other.pdf", label="stays rejected")
    sandbox.reject = lambda name, data: "the document could not be read"
    first = run_agent(config, "upload")
    assert first.returncode == 1, first.stderr
    sidecar = inbox / "error" / "retry.pdf.error.json"
    assert sidecar.is_file() and (inbox / "error" / "other.pdf.error.json").is_file(), first.stderr
    status = json.loads(run_agent(config, "status", "--json").stdout)
    assert sorted(e["file"] for e in status["recent_errors"]) == ["other.pdf", "retry.pdf"], status["recent_errors"]

    sandbox.reject = None
    (inbox / "error" / "retry.pdf").rename(inbox / "retry.pdf")
    second = run_agent(config, "upload")
    assert second.returncode == 0, second.stderr
    assert (inbox / "done" / "retry.pdf").is_file(), second.stderr
    assert not sidecar.exists(), second.stderr
    assert (inbox / "error" / "other.pdf.error.json").is_file()  # its file is still in error/
    status = json.loads(run_agent(config, "status", "--json").stdout)
    assert [e["file"] for e in status["recent_errors"]] == ["other.pdf"], status["recent_errors"]


# --- interrupts -----------------------------------------------------------------------------------

def _files(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def _signal_and_wait(agent, signum: int, within: float) -> tuple[int, str]:
    """Send `signum` and wait for the exit: (exit code, log); the log is printed if it takes too long."""
    agent.proc.send_signal(signum)
    try:
        code = agent.proc.wait(within)
    except subprocess.TimeoutExpired:
        print(agent.log())
        raise
    return code, agent.log()


def test_sigint_on_upload_gives_claims_back_and_exits_130_with_a_summary(tmp_path, agents):
    with Sandbox(analysis_delay_seconds=0.2, seed=1234, faults=Faults(latency_seconds=0.3)) as sandbox:
        config = make_config(tmp_path, sandbox)
        inbox = tmp_path / "inbox"
        names = [f"invoice-{i:03d}.pdf" for i in range(300)]
        for name in names:
            write_pdf(inbox / name)
        agent = agents(config, "upload")
        wait_for(lambda: _files(inbox / "done"), timeout=60, message="a first upload", on_fail=agent.tail,
                 give_up=lambda: agent.proc.poll() is not None and "the upload ended before the signal")
        code, log = _signal_and_wait(agent, signal.SIGINT, within=10)
        assert code == 130, log
        assert "upload interrupted:" in log and "back in the inbox for the next pass" in log, log
        assert "Traceback" not in log, log
        done, back = _files(inbox / "done"), [n for n in _files(inbox) if n.endswith(".pdf")]
        assert sorted(done + back) == names, log
        assert len(back) > 0, "the pass finished before the signal: make it longer"
        assert [p for p in (inbox / ".processing").rglob("*") if p.is_file()] == [], log


def test_sigterm_on_run_during_a_big_sync_exits_0_quickly_and_the_next_sync_completes(tmp_path, agents):
    with Sandbox(analysis_delay_seconds=0.2, seed=1234, faults=Faults(latency_seconds=0.05)) as sandbox:
        sandbox.seed(1000)
        config = make_config(tmp_path, sandbox, outbox={"sync_interval_seconds": 3600})
        agent = agents(config, "run")
        outbox = tmp_path / "outbox"
        wait_for(lambda: len(list(outbox.glob("*.json"))) >= 20, timeout=60, message="the sync under way",
                 on_fail=agent.tail, give_up=lambda: agent.proc.poll() is not None and "the agent ended")
        code, log = _signal_and_wait(agent, signal.SIGTERM, within=5)
        assert code == 0, log
        assert not any(" ERROR " in line or "Traceback" in line for line in log.splitlines()), log
        assert len(list(outbox.glob("*.json"))) < 1000, "the sync finished before the signal: make it longer"
        sandbox.faults = Faults()
        again = run_agent(config, "sync")
        assert again.returncode == 0, again.stderr
        assert "cursor not advanced" not in again.stderr, again.stderr
        assert len(list(outbox.glob("*.json"))) >= 1000, again.stderr


def test_sigint_on_sync_exits_130_and_the_next_sync_completes(tmp_path, agents):
    with Sandbox(analysis_delay_seconds=0.2, seed=1234, faults=Faults(latency_seconds=0.05)) as sandbox:
        sandbox.seed(500)
        config = make_config(tmp_path, sandbox)
        outbox = tmp_path / "outbox"
        agent = agents(config, "sync")
        wait_for(lambda: len(list(outbox.glob("*.json"))) >= 10, timeout=60, message="the sync under way",
                 on_fail=agent.tail, give_up=lambda: agent.proc.poll() is not None and "the sync ended")
        agent.proc.send_signal(signal.SIGINT)
        try:
            code = agent.proc.wait(10)
        except Exception:
            print(agent.log())
            raise
        log = agent.log()
        assert code == 130, log
        assert "sync interrupted" in log and "Traceback" not in log, log
        sandbox.faults = Faults()
        again = run_agent(config, "sync")
        assert again.returncode == 0 and "cursor not advanced" not in again.stderr, again.stderr
        assert len(list(outbox.glob("*.json"))) >= 500, again.stderr
