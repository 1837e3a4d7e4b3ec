"""A wrong `[qonto] base_url` is said at once, in one sentence naming it: refused at configuration
when readers would disagree on its host, and a configuration error (exit 2) when it leads to no
Qonto API (TLS to a plain-http server, a 404 where Qonto always answers). `qonto-agent` runs as a
real process against the sandbox over HTTP."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from support import run_agent, write_config

from agent.base.errors import ConfigError
from agent.config import from_mapping

CREDENTIALS = {"login": "sandbox-org", "secret_key": "sandbox-secret-key"}


def qonto(base_url: str) -> dict:
    return {"qonto": {"base_url": base_url, **CREDENTIALS}}


@pytest.mark.parametrize("url, said", [
    ("http://192.0.2.1\\@localhost/", "backslash"),
    ("http://user@localhost@192.0.2.1/", "user name or password"),
    ("https://user:pw@thirdparty.qonto.com", "user name or password"),
    ("http://127.0.0.1%2F@192.0.2.1/", "user name or password"),
    ("http://192.0.2.1/", "use https://"),
    ("https://thirdparty qonto.com", "not a valid URL"),
])
def test_a_url_whose_host_readers_disagree_on_is_refused(url, said):
    with pytest.raises(ConfigError, match="`\\[qonto\\] base_url`") as caught:
        from_mapping(qonto(url), env={})
    assert said in str(caught.value) and "pw" not in str(caught.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "http://localhost:8765/v2/", "http://[::1]:8765",
                                 "https://thirdparty.qonto.com", "https://thirdparty-sandbox.staging.qonto.co/v2"])
def test_plain_urls_are_accepted(url):
    assert from_mapping(qonto(url), env={}).qonto.base_url == url


@pytest.mark.parametrize("url", ["http://192.0.2.1\\@localhost/", "http://user@localhost@192.0.2.1/"])
def test_the_issue_urls_are_refused_before_any_connection(tmp_path, url):
    result = run_agent(write_config(tmp_path, url), "check", timeout=30)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert "`[qonto] base_url`" in line and "Traceback" not in result.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def _one_sentence(result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Retrying" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["check", "sync"])
def test_https_to_a_plain_http_server_is_a_configuration_error(tmp_path, sandbox, command):
    config = write_config(tmp_path, sandbox.base_url.replace("http://", "https://"))
    started = time.monotonic()
    result = run_agent(config, command, timeout=30)
    assert result.returncode == 2 and time.monotonic() - started < 10, result.stderr
    line = _one_sentence(result)
    assert "TLS" in line and "`[qonto] base_url`" in line


def test_a_wrong_path_prefix_is_a_configuration_error(tmp_path, sandbox):
    started = time.monotonic()
    result = run_agent(write_config(tmp_path, sandbox.base_url + "/api/qonto"), "check", timeout=30)
    assert result.returncode == 2 and time.monotonic() - started < 10, result.stderr
    line = _one_sentence(result)
    assert "404" in line and "/v2/organization" in line and "`[qonto] base_url`" in line


def test_a_closed_port_is_one_sentence_within_seconds(tmp_path):
    started = time.monotonic()
    result = run_agent(write_config(tmp_path, f"http://127.0.0.1:{_closed_port()}"), "check", timeout=30)
    assert result.returncode in (2, 3) and time.monotonic() - started < 10, result.stderr
    line = _one_sentence(result)
    assert "connection refused" in line and "`[qonto] base_url`" in line


def test_the_right_address_still_checks_out(tmp_path: Path, sandbox):
    result = run_agent(write_config(tmp_path, sandbox.base_url + "/v2"), "check", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "OK: connected to Qonto as" in result.stdout
