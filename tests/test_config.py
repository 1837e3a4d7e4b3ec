"""Configuration: every refusal is a sentence that names what to change."""

import logging
import os
from pathlib import Path

import pytest

from agent import config as configuration
from agent import config_paths
from agent.base.errors import ConfigError

CREDS = {"qonto": {"login": "acme", "secret_key": "s3cret-value"}}


def load_doc(tmp_path, text, env=None, **kw):
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return configuration.load(path, env=env or {}, **kw)


def test_defaults_and_relative_paths(tmp_path):
    cfg = load_doc(tmp_path, '[qonto]\nlogin = "acme"\nsecret_key = "s3cret-value"\n')
    assert cfg.inbox.path == tmp_path / "inbox"
    assert cfg.outbox.path == tmp_path / "outbox"
    assert cfg.inbox.batch_size == 20 and cfg.inbox.patterns == ("*.pdf", "*.jpg", "*.jpeg", "*.png")
    assert cfg.qonto.api_root == "https://thirdparty.qonto.com"
    assert cfg.state.path == tmp_path / "config.ledger.sqlite"  # one ledger per configuration


def test_default_ledger_is_per_configuration_not_per_user(tmp_path):
    doc = '[qonto]\nlogin = "acme"\nsecret_key = "s3cret-value"\n'
    one = load_doc(tmp_path, doc, env={"HOME": "/home/a", "XDG_STATE_HOME": "/home/a/.local/state"})
    two = load_doc(tmp_path, doc, env={"HOME": "/home/b", "XDG_STATE_HOME": "/home/b/.local/state"})
    assert one.state.path == two.state.path == tmp_path / "config.ledger.sqlite"
    assert one.previous_ledger == Path("/home/a/.local/state/qonto-agent") / one.previous_ledger.name
    systemd = load_doc(tmp_path, doc, env={"STATE_DIRECTORY": "/var/lib/qonto-agent"})
    assert systemd.state.path.parent == Path("/var/lib/qonto-agent")
    assert systemd.state.path.name.startswith("config-") and systemd.state.path.suffix == ".sqlite"
    service_dir = tmp_path / "var-lib"  # what systemd made: a command run by hand finds it
    service_dir.mkdir()
    (service_dir / systemd.state.path.name).touch()
    by_hand = config_paths.default_state_path(tmp_path / "config.toml", {}, systemd_dir=service_dir)
    assert by_hand == service_dir / systemd.state.path.name
    chosen = load_doc(tmp_path, doc + '[state]\npath = "x.sqlite"\n', env={"STATE_DIRECTORY": "/var/lib/q"})
    assert chosen.state.path == tmp_path / "x.sqlite" and chosen.previous_ledger is None


def test_the_rate_budget_file_is_the_hosts_unless_told(tmp_path):
    doc = '[qonto]\nlogin = "acme"\nsecret_key = "s3cret-value"\n'
    per_user = load_doc(tmp_path, doc, env={"HOME": "/home/a", "XDG_STATE_HOME": "/home/a/.local/state"})
    assert per_user.qonto.rate_limit_file == Path("/home/a/.local/state/qonto-agent/rate-limit.sqlite")
    service = load_doc(tmp_path, doc, env={"STATE_DIRECTORY": "/var/lib/qonto-agent:/other"})
    assert service.qonto.rate_limit_file == Path("/var/lib/qonto-agent/rate-limit.sqlite")
    chosen = load_doc(tmp_path, doc + 'rate_limit_file = "shared/budget.sqlite"\n',
                      env={"STATE_DIRECTORY": "/var/lib/qonto-agent"})
    assert chosen.qonto.rate_limit_file == tmp_path / "shared" / "budget.sqlite"  # beside the configuration


def test_trailing_v2_is_accepted(tmp_path):
    cfg = load_doc(tmp_path, '[qonto]\nbase_url = "https://thirdparty.qonto.com/v2/"\nlogin = "a"\nsecret_key = "b"\n')
    assert cfg.qonto.api_root == "https://thirdparty.qonto.com"


def test_unknown_key_names_the_nearest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key `\[inbox\] pattern`.*did you mean `patterns`"):
        load_doc(tmp_path, '[inbox]\npattern = ["*.pdf"]\n', need_credentials=False)
    with pytest.raises(ConfigError, match=r"unknown section \[inbx\].*did you mean `inbox`"):
        load_doc(tmp_path, '[inbx]\npath = "x"\n', need_credentials=False)


def test_wrong_type_says_what_was_expected(tmp_path):
    with pytest.raises(ConfigError, match=r"`\[inbox\] settle_seconds` must be a number, not str"):
        load_doc(tmp_path, '[inbox]\nsettle_seconds = "5"\n', need_credentials=False)
    with pytest.raises(ConfigError, match=r"`\[inbox\] polling` must be true, false or \"auto\""):
        load_doc(tmp_path, '[inbox]\npolling = "sometimes"\n', need_credentials=False)


def test_missing_credentials_name_key_and_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"`\[qonto\] login` \(or QONTO_LOGIN\)"):
        load_doc(tmp_path, "")
    with pytest.raises(ConfigError, match=r"`\[qonto\] secret_key` \(or QONTO_SECRET_KEY\)"):
        load_doc(tmp_path, '[qonto]\nlogin = "acme"\n')


def test_environment_overrides_the_file(tmp_path):
    cfg = load_doc(tmp_path, '[qonto]\nlogin = "file"\nsecret_key = "file-secret"\n',
                   env={"QONTO_LOGIN": "env", "QONTO_SECRET_KEY": "env-secret"})
    assert (cfg.qonto.login, cfg.qonto.secret_key) == ("env", "env-secret")
    assert "env-secret" not in repr(cfg)


def test_http_only_for_loopback(tmp_path):
    with pytest.raises(ConfigError, match="use https://"):
        load_doc(tmp_path, '[qonto]\nbase_url = "http://api.example.com"\nlogin = "a"\nsecret_key = "b"\n')
    for host in ("127.0.0.1:8765", "localhost", "[::1]:80"):
        load_doc(tmp_path, f'[qonto]\nbase_url = "http://{host}"\nlogin = "a"\nsecret_key = "b"\n')


def test_batch_size_over_20_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="between 1 and 20"):
        load_doc(tmp_path, '[inbox]\nbatch_size = 21\n', need_credentials=False)


def test_invalid_toml_and_since(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_doc(tmp_path, "[inbox\n", need_credentials=False)
    with pytest.raises(ConfigError, match="2026-01-01T00:00:00Z"):
        load_doc(tmp_path, '[outbox]\nsince = "yesterday"\n', need_credentials=False)


def test_secret_in_a_readable_file_warns(tmp_path, caplog):
    path = tmp_path / "config.toml"
    path.write_text('[qonto]\nlogin = "acme"\nsecret_key = "s3cret-value"\n')
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        configuration.load(path, env={})
    assert "chmod 600" in caplog.text and "s3cret-value" not in caplog.text


def test_write_config_round_trips_and_refuses_to_clobber(tmp_path):
    path = tmp_path / "config.toml"
    doc = {"qonto": {"base_url": "http://127.0.0.1:8765", "login": "acme", "secret_key": "s3cret-value"},
           "inbox": {"path": "in"}, "outbox": {"path": "out"}}
    configuration.write_config(path, doc)
    assert os.stat(path).st_mode & 0o777 == 0o600
    cfg = configuration.load(path, env={})
    assert cfg.inbox.path == tmp_path / "in" and cfg.qonto.login == "acme"
    with pytest.raises(ConfigError, match="--force"):
        configuration.write_config(path, doc)
    configuration.write_config(path, doc, force=True)
