"""`status` for monitoring: its exit codes, liveness from `run`'s own lock, the metrics file, and
the command line a newcomer types (options after the command, `--help`, no configuration)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from support import REPO, agent_env, make_config, run_agent, wait_for, write_pdf

from agent import usage
from agent.base import times
from agent.base.times import iso

HEALTHY, NOT_RUNNING, PERSON_NEEDED = 0, 5, 6


def _agent(*args: str) -> subprocess.CompletedProcess:
    """`qonto-agent *args` exactly as typed (global options wherever the caller puts them)."""
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60,
                          env=agent_env(), cwd=REPO)


def _status(config) -> tuple[int, dict]:
    done = run_agent(config, "status", "--json")
    return done.returncode, json.loads(done.stdout)


def test_status_without_a_configuration_says_so_with_options_after_the_command(tmp_path):
    done = _agent("status", "-c", str(tmp_path / "none.toml"), "--log-format", "json", "-v")
    assert done.returncode == 2
    line = json.loads(done.stderr.strip().splitlines()[-1])  # --log-format after the command took effect
    assert "no configuration file at" in line["message"] and "none.toml" in line["message"]
    assert done.stdout == ""  # no invented ./inbox described as healthy


def test_a_misspelt_key_is_a_question_not_a_question_and_a_full_stop(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[inbox]\nsetle_seconds = 3\n")
    done = _agent("status", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.rstrip().endswith("did you mean `settle_seconds`?")


@pytest.mark.parametrize("command", sorted(usage.COMMANDS))
def test_every_command_help_has_a_description_exit_codes_and_an_example(command):
    done = _agent(command, "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert " ".join(usage.COMMANDS[command].description.split()[:6]) in " ".join(text.split())
    assert re.search(r"exit codes:\n  0 ", text) and f"example:\n  qonto-agent {command}" in text
    assert "-c CONFIG" in text and "--log-format" in text


def test_status_exit_codes_healthy_then_not_running_after_kill_9(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox)
    write_pdf(tmp_path / "inbox" / "fine.pdf")
    assert _status(config)[0] == HEALTHY  # never started: nothing expected of `run`
    agent = agents(config, "run")

    def healthy_and_done():
        code, data = _status(config)
        return code == HEALTHY and data["run_alive"] and data["done_count"] == 1

    wait_for(healthy_and_done, message="healthy, running, file done", on_fail=agent.log)
    agent.kill()  # its last heartbeat is seconds old: only the free lock tells it is gone
    code, data = _status(config)
    assert (code, data["run_alive"], data["run_expected"]) == (NOT_RUNNING, False, True)
    assert "NOT running" in run_agent(config, "status").stdout


def test_a_clean_stop_is_healthy_unless_running_is_expected(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox)
    agent = agents(config, "run")
    wait_for(lambda: _status(config)[1]["run_alive"], message="run alive", on_fail=agent.log)
    assert agent.stop() == 0
    code, data = _status(config)
    assert (code, data["run_alive"], data["run_expected"]) == (HEALTHY, False, False)
    assert run_agent(config, "status", "--expect-running").returncode == NOT_RUNNING


def test_files_in_error_wait_on_a_person_until_marked_seen(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox)
    agent = agents(config, "run")
    (tmp_path / "inbox" / "notes.pdf").write_text("not a PDF at all\n")
    wait_for(lambda: _status(config)[1]["error_count"] == 1, message="notes.pdf in error/", on_fail=agent.log)
    code, data = _status(config)
    assert (code, data["run_alive"], data["errors_unseen"]) == (PERSON_NEEDED, True, 1)
    assert "not marked seen" in run_agent(config, "status").stdout
    assert run_agent(config, "status", "--seen").returncode == HEALTHY
    assert _status(config)[1]["errors_unseen"] == 0
    (tmp_path / "inbox" / "notes-again.pdf").write_text("not a PDF either\n")  # a new one needs a person again
    wait_for(lambda: _status(config)[0] == PERSON_NEEDED, message="a new file in error/", on_fail=agent.log)


SAMPLE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]* -?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?")
COMMENT = re.compile(r"# HELP [a-zA-Z_:][a-zA-Z0-9_:]* \S.*|# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge)")


def _metrics(path) -> dict[str, float] | None:
    """The samples of the metrics file, every line checked against the exposition format."""
    if not path.exists():
        return None
    text = path.read_text(encoding="ascii")
    assert text.endswith("\n")
    for line in text.splitlines():
        assert SAMPLE.fullmatch(line) or COMMENT.fullmatch(line), line
    return {name: float(value) for name, value in (line.split() for line in text.splitlines()
                                                     if not line.startswith("#"))}


def test_run_writes_a_metrics_file_that_agrees_with_status(tmp_path, sandbox, agents):
    prom = tmp_path / "textfile" / "qonto_agent.prom"
    prom.parent.mkdir()
    config = make_config(tmp_path, sandbox, status={"metrics_file": str(prom)})
    for name in ("a.pdf", "b.pdf"):
        write_pdf(tmp_path / "inbox" / name)
    (tmp_path / "inbox" / "notes.pdf").write_text("not a PDF at all\n")
    agent = agents(config, "run")

    def agreeing():
        values, (_, data) = _metrics(prom), _status(config)
        if not values or values["qonto_agent_uploaded_total"] != 2 or not data["last_sync_at"]:
            return None
        seen = {"qonto_agent_files_waiting": len(data["pending"]),
                "qonto_agent_uploaded_total": data["uploaded_count"],
                "qonto_agent_refused_total": data["refused_count"],
                "qonto_agent_paused": int(bool(data["paused"]))}
        same = all(values[k] == v for k, v in seen.items())
        upload_at = values["qonto_agent_last_upload_timestamp_seconds"]
        sync_at = values["qonto_agent_last_sync_timestamp_seconds"]
        return (same and iso(upload_at) == data["last_upload_at"]
                and abs(times.parse(data["last_sync_at"]).timestamp() - sync_at) < 1 and values)

    values = wait_for(agreeing, timeout=30, message="the metrics file agrees with status --json", on_fail=agent.log)
    assert values["qonto_agent_refused_total"] == 1 and values["qonto_agent_paused"] == 0
    assert [p.name for p in prom.parent.iterdir()] == ["qonto_agent.prom"]  # no temporary left beside it
    assert agent.stop() == 0
