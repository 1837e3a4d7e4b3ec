"""The command line as a person meets it: real processes, the sandbox over HTTP."""

from __future__ import annotations

import http.server
import json
import os
import threading
from datetime import datetime, timedelta, timezone

import pytest
import tomli_w
from support import agent_env, make_config, run_agent, wait_for, write_pdf

from agent.config import load


def test_check_prints_the_organization(tmp_path, sandbox):
    result = run_agent(make_config(tmp_path, sandbox), "check")
    assert result.returncode == 0, result.stderr
    assert "Sandbox Company SAS" in result.stdout


def test_check_with_a_wrong_secret_exits_4_naming_key_and_variable(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox, qonto={"secret_key": "not-the-right-one"})
    result = run_agent(config, "check")
    assert result.returncode == 4
    assert "`[qonto] secret_key`" in result.stderr and "QONTO_SECRET_KEY" in result.stderr
    assert "not-the-right-one" not in result.stderr + result.stdout


def test_check_against_an_html_server_names_the_staging_token(tmp_path):
    class LoginPage(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><html><body>Sign in</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LoginPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = tmp_path / "config.toml"
        config.write_text(tomli_w.dumps({"qonto": {"base_url": f"http://127.0.0.1:{server.server_port}",
                                                   "login": "a", "secret_key": "b"}}))
        result = run_agent(config, "check")
    finally:
        server.shutdown()
    assert result.returncode not in (0, 4)
    assert "staging_token" in result.stderr and "QONTO_STAGING_TOKEN" in result.stderr


def test_unknown_key_exits_2_naming_the_nearest(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox, inbox={"setle_seconds": 3})
    result = run_agent(config, "check")
    assert result.returncode == 2
    assert "did you mean `settle_seconds`" in result.stderr


def test_init_writes_a_config_check_accepts_and_refuses_to_overwrite(tmp_path, sandbox):
    config = tmp_path / "agent" / "config.toml"
    args = ["init", "--no-input", "--inbox", "in", "--outbox", "out", "--base-url", sandbox.base_url,
            "--login", "sandbox-org", "--secret-key", "sandbox-secret-key"]
    first = run_agent(config, *args)
    assert first.returncode == 0, first.stderr
    assert "Sandbox Company SAS" in first.stdout  # init checks the credentials it was given
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "agent" / "in").is_dir() and (tmp_path / "agent" / "out").is_dir()
    cfg = load(config, env={})
    assert cfg.inbox.path == tmp_path / "agent" / "in" and cfg.qonto.login == "sandbox-org"
    assert run_agent(config, "check").returncode == 0
    again = run_agent(config, *args)
    assert again.returncode == 2 and "--force" in again.stderr
    assert run_agent(config, *args, "--force").returncode == 0


def test_init_without_credentials_leaves_them_to_the_environment(tmp_path):
    config = tmp_path / "config.toml"
    result = run_agent(config, "init", "--no-input")
    assert result.returncode == 0, result.stderr
    assert "QONTO_SECRET_KEY" in result.stdout
    assert "secret_key" not in config.read_text()
    assert oct(config.stat().st_mode & 0o777) == "0o644"


def test_status_without_a_running_agent_says_so(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    write_pdf(tmp_path / "inbox" / "waiting.pdf")
    text = run_agent(config, "status")
    assert text.returncode == 0, text.stderr
    assert "NOT running" in text.stdout and "waiting.pdf" in text.stdout
    data = json.loads(run_agent(config, "status", "--json").stdout)
    assert data["run_alive"] is False
    assert [p["file"] for p in data["pending"]] == ["waiting.pdf"]
    for key in ("mode", "pending", "done_count", "error_count", "recent_uploads", "recent_errors",
                "last_sync_at", "cursor", "outbox_count"):
        assert key in data


@pytest.mark.slow  # over 10 s; keeps the default run near 10 minutes on 2 cores
def test_status_quotes_the_pause_of_a_running_agent_refused_by_qonto(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, qonto={"secret_key": "wrong-secret-value"})
    agent = agents(config, "run")
    write_pdf(tmp_path / "inbox" / "waiting.pdf")

    def paused() -> dict | None:
        data = json.loads(run_agent(config, "status", "--json").stdout)
        return data if data["run_alive"] and data["paused"] else None

    data = wait_for(paused, message="status --json shows the pause", on_fail=agent.log,
                    give_up=lambda: agent.proc.poll() is not None and "the agent exited")
    assert "secret key was refused (401)" in data["paused"]["reason"]
    assert "`[qonto] secret_key`" in data["paused"]["reason"]
    until = datetime.fromisoformat(data["paused"]["until"].replace("Z", "+00:00"))
    assert datetime.now(timezone.utc) < until <= datetime.now(timezone.utc) + timedelta(seconds=3600)
    shown = run_agent(config, "status")
    assert shown.returncode == 6  # a person is needed
    text = shown.stdout
    assert "PAUSED until" in text and "secret key was refused (401)" in text
    assert "wrong-secret-value" not in text + json.dumps(data)
    assert agent.stop() == 0


def test_status_shows_pending_falling_while_run_works_a_backlog(tmp_path, agents):
    from agent.sandbox.faults import Faults
    from agent.sandbox.server import Sandbox

    with Sandbox(faults=Faults(latency_seconds=0.5), analysis_delay_seconds=0.2) as sandbox:
        config = make_config(tmp_path, sandbox, inbox={"batch_size": 5, "settle_seconds": 0.3})
        for i in range(30):
            write_pdf(tmp_path / "inbox" / f"backlog-{i:02}.pdf")
        agent = agents(config, "run")
        seen = []

        def pending_count():
            data = json.loads(run_agent(config, "status", "--json").stdout)
            if data["run_alive"]:
                seen.append(len(data["pending"]))
            return data["done_count"] == 30

        wait_for(pending_count, timeout=60, interval=0.2, message="the backlog done", on_fail=agent.log)
        assert max(seen) >= 10 and seen[-1] <= 5, seen
        assert seen == sorted(seen, reverse=True) or max(seen[len(seen) // 2:]) < max(seen), seen


def test_json_logs_are_one_object_per_line(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    write_pdf(tmp_path / "inbox" / "one.pdf")
    result = run_agent(config, "--log-format", "json", "upload")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert any(entry["message"].startswith("uploaded one.pdf as invoice") for entry in lines)
    assert all({"time", "level", "message"} <= set(entry) for entry in lines)


def test_upload_once_exit_codes(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    write_pdf(tmp_path / "inbox" / "good.pdf")
    (tmp_path / "inbox" / "bad.pdf").write_text("not a pdf")
    result = run_agent(config, "upload")
    assert result.returncode == 1, result.stderr  # one file failed for good
    assert sorted(os.listdir(tmp_path / "inbox" / "done")) == ["good.pdf"]
    write_pdf(tmp_path / "inbox" / "good-again.pdf", "good.pdf")  # same bytes as good.pdf
    again = run_agent(config, "upload")
    assert again.returncode == 0 and "already uploaded as invoice" in again.stderr
    forced_file = tmp_path / "inbox" / "forced.pdf"
    write_pdf(forced_file, "good.pdf")
    forced = run_agent(config, "upload", "--force", str(forced_file))
    assert forced.returncode == 0, forced.stderr
    assert sandbox.invoice_count() == 2
    outside = write_pdf(tmp_path / "elsewhere.pdf")
    refused = run_agent(config, "upload", str(outside))
    assert refused.returncode == 2 and "not inside the inbox" in refused.stderr


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_run_stops_cleanly_on_signals(tmp_path, sandbox, agents, signal_name):
    import signal
    import time

    config = make_config(tmp_path, sandbox)
    agent = agents(config, "run")
    wait_for(lambda: "watching" in agent.log(), message="the agent watching", on_fail=agent.log)
    started = time.monotonic()
    agent.proc.send_signal(getattr(signal, signal_name))
    assert agent.proc.wait(10) == 0, agent.log()
    assert time.monotonic() - started < 10


def test_sandbox_command_serves_and_check_accepts_it(tmp_path):
    import signal
    import socket
    import subprocess
    import sys

    from support import REPO

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "agent", "sandbox", "--port", str(port)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=agent_env())
    try:
        banner = wait_for(lambda: server.stdout.readline(), message="the sandbox banner")
        assert str(port) in banner or str(port) in server.stdout.readline()
        config = tmp_path / "cfg.toml"
        config.write_text(tomli_w.dumps({"qonto": {"base_url": f"http://127.0.0.1:{port}", "login": "sandbox-org",
                                                   "secret_key": "sandbox-secret-key"}}))
        (tmp_path / "inbox").mkdir()  # `check` checks the folders too
        result = run_agent(config, "check")
        assert result.returncode == 0 and "Sandbox Company SAS" in result.stdout, result.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) == 0


def test_init_asks_on_a_terminal(tmp_path):
    from agent import initialize

    replies = iter([str(tmp_path / "in"), "", "", "acme-org"])
    answers = initialize.ask(initialize.Answers("inbox", "outbox", "https://thirdparty.qonto.com"),
                             prompt=lambda _: next(replies), secret_prompt=lambda _: "")
    assert (answers.inbox, answers.outbox, answers.login, answers.secret_key) == (str(tmp_path / "in"),
                                                                                   "outbox", "acme-org", "")
    [cfg] = initialize.write(tmp_path / "config.toml", answers, force=False)
    assert cfg.qonto.login == "acme-org" and cfg.outbox.path == tmp_path / "outbox"


def test_run_without_its_inbox_says_so_and_creates_nothing(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox, inbox={"path": "share/inbox"})
    result = run_agent(config, "run", timeout=30)
    assert result.returncode == 2
    assert "does not exist: create it, or check that its share is mounted" in result.stderr
    assert not (tmp_path / "share").exists()
