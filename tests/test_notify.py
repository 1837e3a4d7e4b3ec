"""Notifications as a person gets them: the agent as a real process, a real SMTP server (aiosmtpd)
and a real HTTP receiver on loopback; one digest per interval, a dead mail server one log line."""

from __future__ import annotations

import email
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from support import agent_env, make_config, wait_for, write_pdf

from agent import config as configuration
from agent.base.errors import ConfigError

INTERVAL = 3.0  # the digest's interval in these tests: every refusal of a burst falls inside it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    """What the SMTP server received, as parsed messages."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp():
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


@pytest.fixture
def hook():
    """An HTTP receiver on loopback that records each JSON body it is posted."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's hook name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.received = received
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token"
    yield server
    server.shutdown()
    server.server_close()


def notify(port: int, **extra) -> dict:
    return {"interval_seconds": INTERVAL, "timeout_seconds": 3, "smtp_host": "127.0.0.1", "smtp_port": port,
            "smtp_security": "none", "smtp_from": "agent@example.com", "smtp_to": ["accounts@example.com"], **extra}


def refuse(inbox, count: int) -> list[str]:
    """Files that go to error/ as soon as they settle, without a request: text under a PDF or JPEG name."""
    names = [f"notes-{i:02}.{'pdf' if i % 2 else 'jpg'}" for i in range(count)]
    for name in names:
        (inbox / name).write_text(f"notes {name}, not an invoice")
    return sorted(names)


def test_thirty_refused_files_make_one_email_and_one_webhook_call(tmp_path, sandbox, agents, smtp, hook):
    config = make_config(tmp_path, sandbox, notify={**notify(smtp.port), "webhook_url": hook.url})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    names = refuse(inbox, 30)
    wait_for(lambda: smtp.messages and hook.received, timeout=30, message="a mail and a webhook call",
             on_fail=agent.log)
    wait_for(lambda: len([p for p in (inbox / "error").iterdir() if p.name.endswith(".error.json")]) == 30,
             message="30 sidecars in error/", on_fail=agent.log)
    assert agent.stop() == 0, agent.log()  # a stop sends what is left: nothing, when the digest held all 30

    assert len(smtp.messages) == 1 and len(hook.received) == 1, (smtp.messages, hook.received)
    mail = smtp.messages[0]
    assert mail["Subject"].endswith(": 30 file(s) put in error/") and mail["To"] == "accounts@example.com"
    body = mail.get_payload()
    assert all(f"- {name}: " in body for name in names), body
    assert "not a PDF, JPEG or PNG" in body
    payload = hook.received[0]
    assert payload["counts"] == {"refused": 30, "needs_person": 0, "stopped": 0}
    assert sorted(e["file"] for e in payload["events"]) == names
    assert all(e["reason"] and e["hint"] and e["kind"] == "refused" for e in payload["events"])
    assert "notified by e-mail: " in agent.log() and "secret-token" not in agent.log()


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is needed to make the test's certificate")
def test_starttls_is_used_and_the_login_comes_from_the_environment(tmp_path, sandbox, agents):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    box, logins = Mailbox(), []

    def authenticate(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"mail-secret-value")

    controller = Controller(box, hostname="127.0.0.1", port=free_port(), tls_context=tls, require_starttls=True,
                            authenticator=authenticate, auth_required=True)
    controller.start()
    try:
        config = make_config(tmp_path, sandbox, notify=notify(controller.port, smtp_security="starttls",
                                                              smtp_username="agent"))
        agent = agents(config, "run", env=agent_env(QONTO_SMTP_PASSWORD="mail-secret-value", SSL_CERT_FILE=str(cert)))
        refuse(tmp_path / "inbox", 2)
        wait_for(lambda: box.messages, timeout=30, message="a mail over STARTTLS", on_fail=agent.log)
        assert logins == [(b"agent", b"mail-secret-value")]
        assert agent.stop() == 0 and "mail-secret-value" not in agent.log()
    finally:
        controller.stop()


def test_a_dead_mail_server_costs_one_log_line_and_uploads_go_on(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, notify=notify(free_port()))  # nothing listens there
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    refuse(inbox, 3)
    failed = "notification by e-mail not sent (connection refused)"
    wait_for(lambda: failed in agent.log(), timeout=20, message="the failed digest's line", on_fail=agent.log)
    for i in range(3):
        write_pdf(inbox / f"good-{i}.pdf")
    wait_for(lambda: sandbox.invoice_count() == 3 and len(list((inbox / "done").iterdir())) == 3,
             message="3 good files uploaded after the failure", on_fail=agent.log)
    assert agent.proc.poll() is None
    assert agent.stop() == 0, agent.log()
    lines = [line for line in agent.log().splitlines() if "notification by" in line]
    assert len(lines) == 1 and "3 event(s)" in lines[0], lines


@pytest.mark.slow  # over 10 s; keeps the default run near 10 minutes on 2 cores
def test_refused_credentials_are_told_with_what_to_check(tmp_path, sandbox, agents, hook):
    config = make_config(tmp_path, sandbox, qonto={"secret_key": "wrong-secret-value"},
                         notify={"interval_seconds": INTERVAL, "webhook_url": hook.url})
    agent = agents(config, "run")
    write_pdf(tmp_path / "inbox" / "invoice.pdf")
    wait_for(lambda: hook.received, timeout=30, message="a webhook call", on_fail=agent.log)
    payload = hook.received[0]
    assert payload["counts"] == {"refused": 0, "needs_person": 1, "stopped": 0}, payload
    assert "check `[qonto] login` and `[qonto] secret_key`" in payload["events"][0]["reason"]
    assert "wrong-secret-value" not in json.dumps(payload)
    assert agent.stop() == 0 and len(hook.received) == 1, hook.received


@pytest.mark.slow  # over 10 s; keeps the default run near 10 minutes on 2 cores
def test_an_unexpected_stop_is_told_at_once(tmp_path, sandbox, agents, hook):
    config = make_config(tmp_path, sandbox, notify={"interval_seconds": 3600, "webhook_url": hook.url})
    agent = agents(config, "run")
    wait_for(lambda: (tmp_path / "state" / "ledger.sqlite").exists(), message="the ledger", on_fail=agent.log)
    wait_for(lambda: "watching " in agent.log(), message="the agent started",
             on_fail=agent.log)
    (tmp_path / "state" / "ledger.sqlite").unlink()  # the agent stops: a person must look
    assert agent.proc.wait(30) == 2, agent.log()
    assert len(hook.received) == 1, agent.log()
    event = hook.received[0]["events"][0]
    assert event["kind"] == "stopped" and "ledger lost" in event["reason"]


@pytest.mark.parametrize("notify_section, words", [
    ({"smtp_host": "mail.example.com", "smtp_to": ["a@example.com"]}, "`smtp_from` or `smtp_to` is empty"),
    ({"smtp_host": "mail.example.com", "smtp_from": "a@example.com", "smtp_to": ["b@example.com"],
      "smtp_security": "none"}, '"none" is allowed only for loopback'),
    ({"smtp_host": "127.0.0.1", "smtp_from": "a@example.com", "smtp_to": ["b@example.com"],
      "smtp_security": "ssl"}, 'use "starttls" (port 587), "tls" (port 465)'),
    ({"webhook_url": "http://hooks.example.com/x"}, "`[notify] webhook_url` uses http:// to hooks.example.com"),
    ({"smtp_password": "hunter2"}, "set QONTO_SMTP_PASSWORD instead"),
])
def test_notify_settings_that_cannot_work_are_refused_with_the_fix(notify_section, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as caught:
        configuration.from_mapping({"notify": notify_section}, env={}, need_credentials=False)
    assert "hunter2" not in str(caught.value)


def test_the_mail_password_comes_from_the_environment_only():
    cfg = configuration.from_mapping({"notify": {"smtp_host": "mail.example.com", "smtp_from": "a@example.com",
                                                 "smtp_to": ["b@example.com"], "smtp_username": "agent"}},
                                     env={"QONTO_SMTP_PASSWORD": "hunter2"}, need_credentials=False)
    assert cfg.notify.smtp_password == "hunter2" and "hunter2" not in repr(cfg)
