"""`init --systemd`: a unit systemd accepts, sandboxed to the configuration's folders, run by a
dedicated user, with the secrets in a 0600 EnvironmentFile that the agent can start from."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import systemd_unit
from agent.config import load
from support import LOGIN, SECRET, agent_env, run_agent

ANALYZE = shutil.which("systemd-analyze")
STATE_DIR = "/var/lib/qonto-agent"
HARDENED_EXPOSURE = 2.0  # systemd calls up to 4.9 "OK"; the unit's deliberate gaps cost about 1.7


def directives(unit: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in unit.read_text().splitlines() if re.match(r"[A-Za-z]+=", line))


def verify(unit: Path) -> None:
    if not ANALYZE:
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not checked here")
    result = subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr  # warnings too


def exposure(unit: Path) -> float:
    if not ANALYZE:
        pytest.skip("systemd-analyze is not installed: the unit's exposure is not measured here")
    result = subprocess.run([ANALYZE, "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                            timeout=60)
    if "--offline" in result.stderr or "unrecognized option" in result.stderr:
        pytest.skip(f"this systemd-analyze cannot rate a unit file offline: {result.stderr.strip()}")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def test_init_systemd_writes_a_unit_systemd_accepts_and_secrets_the_service_can_start_from(tmp_path, sandbox):
    config = tmp_path / "etc qonto-agent" / "config.toml"  # a space: the unit's quoting is exercised
    result = run_agent(config, "init", "--no-input", "--base-url", sandbox.base_url, "--login", LOGIN,
                       "--secret-key", SECRET, "--systemd")
    assert result.returncode == 0, result.stderr
    assert "Sandbox Company SAS" in result.stdout  # the credentials were checked before they moved
    unit, env_file = config.with_name("qonto-agent.service"), config.with_name("qonto-agent.env")
    assert "sudo systemctl enable --now qonto-agent" in result.stdout and str(unit) in result.stdout
    assert "fill in" not in result.stdout

    settings = directives(unit)
    assert settings["User"] == "qonto-agent"  # not the calling user, here root
    assert settings["StateDirectory"] == "qonto-agent" and settings["EnvironmentFile"] == str(env_file)
    assert shlex.split(settings["ExecStart"]) == [str(Path(sys.executable).with_name("qonto-agent")), "-c",
                                                  str(config), "run"]
    service = load(config, env={"STATE_DIRECTORY": STATE_DIR}, need_credentials=False)
    assert shlex.split(settings["ReadWritePaths"]) == [str(service.inbox.path.resolve()),
                                                       str(service.outbox.path.resolve()), STATE_DIR]
    assert service.state.path.parent == Path(STATE_DIR)
    for option in ("ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateDevices=yes", "Restart=on-failure",
                   "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"):
        assert option in unit.read_text()
    in_tmp = any(tmp_path.resolve().is_relative_to(root) for root in ("/tmp", "/var/tmp"))
    assert settings["PrivateTmp"] == ("no" if in_tmp else "yes")  # PrivateTmp=yes would hide the folders

    assert SECRET not in unit.read_text() and SECRET not in config.read_text()
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert oct(config.stat().st_mode & 0o777) == "0o644"  # the service's user must read it
    # the EnvironmentFile as systemd (or a shell) reads it is what the agent needs to start
    check = subprocess.run(["bash", "-c", 'set -a && . "$1" && exec "$2" -m agent -c "$3" check', "-",
                            str(env_file), sys.executable, str(config)], capture_output=True, text=True,
                           env=agent_env(), timeout=60)
    assert check.returncode == 0 and "Sandbox Company SAS" in check.stdout, check.stderr
    verify(unit)
    assert exposure(unit) <= HARDENED_EXPOSURE + 0.2  # what PrivateTmp=no costs


def test_without_credentials_the_environment_file_has_placeholders_and_the_user_is_chosen(tmp_path):
    config = tmp_path / "config.toml"
    result = run_agent(config, "init", "--no-input", "--systemd", "--user", "invoices")
    assert result.returncode == 0, result.stderr
    env_file = tmp_path / "qonto-agent.env"
    assert f"fill in QONTO_LOGIN and QONTO_SECRET_KEY in {env_file}" in result.stdout
    assert re.findall(r"^(QONTO_\w+)=$", env_file.read_text(), re.M) == ["QONTO_LOGIN", "QONTO_SECRET_KEY"]
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert directives(tmp_path / "qonto-agent.service")["User"] == "invoices"
    again = run_agent(config, "init", "--no-input", "--systemd", "--force")
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("user", ["root", "bad name"])
def test_init_refuses_root_or_an_invalid_user_before_writing_anything(tmp_path, user):
    result = run_agent(tmp_path / "config.toml", "init", "--no-input", "--systemd", "--user", user)
    assert result.returncode == 2
    assert "--user" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_deployment_outside_homes_and_tmp_gets_the_whole_sandbox(tmp_path):
    """The usual layout (/etc, /srv, /var/lib): PrivateTmp= and ProtectHome= hide nothing it needs."""
    unit = tmp_path / "qonto-agent.service"
    writable = [Path("/srv/invoices/inbox"), Path("/srv/invoices/outbox"), Path(STATE_DIR)]
    exe = Path(sys.executable).with_name("qonto-agent")  # systemd-analyze checks that it exists
    unit.write_text(systemd_unit.render([str(exe)],
                                        Path("/etc/qonto-agent/config.toml"), Path("/etc/qonto-agent/qonto-agent.env"),
                                        "qonto-agent", writable))
    settings = directives(unit)
    # A checkout under /tmp (as CI's) runs its own qonto-agent from there: the private /tmp would hide it.
    under_tmp = any(exe.is_relative_to(folder) for folder in ("/tmp", "/var/tmp"))
    under_home = any(exe.is_relative_to(folder) for folder in ("/home", "/root"))
    assert settings["PrivateTmp"] == ("no" if under_tmp else "yes")
    assert settings["ProtectHome"] == ("read-only" if under_home else "yes")
    home = systemd_unit.render(["/usr/bin/python3", "-m", "agent"], Path("/home/ann/config.toml"),
                               Path("/home/ann/qonto-agent.env"), "qonto-agent", writable)
    assert "ProtectHome=read-only" in home and "PrivateTmp=yes" in home
    verify(unit)
    assert exposure(unit) <= HARDENED_EXPOSURE


def test_a_secret_with_quotes_and_dollars_reads_back_whole(tmp_path):
    secret = 'a"b$HOME\\c`d\'e %f'
    env_file = tmp_path / "qonto-agent.env"
    env_file.write_text(systemd_unit.environment_file({"QONTO_SECRET_KEY": secret}))
    read = subprocess.run(["bash", "-c", 'set -a && . "$1" && printf %s "$QONTO_SECRET_KEY"', "-", str(env_file)],
                          capture_output=True, text=True, timeout=10)
    assert read.stdout == secret, read.stderr


def test_init_systemd_with_profiles_serves_them_all_and_moves_every_secret(tmp_path):
    from agent.sandbox.server import Sandbox
    from support import write_profiles_config

    orgs = {"acme": ("acme-org", "acme-secret"), "beta-sarl": ("beta-org", "beta-secret")}
    with Sandbox(organizations=(*orgs.values(), ("gamma-org", "gamma-secret"))) as sandbox:
        config = write_profiles_config(tmp_path / "etc", sandbox.base_url, orgs)
        result = run_agent(config, "init", "--no-input", "--profile", "gamma", "--login", "gamma-org",
                           "--secret-key", "gamma-secret", "--systemd")
        assert result.returncode == 0, result.stderr
        assert "gamma-org SAS" in result.stdout  # the new profile's credentials were checked
        unit, env_file = config.with_name("qonto-agent.service"), config.with_name("qonto-agent.env")
        variables = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line
                         and not line.startswith("#"))
        assert {k: v.strip('"') for k, v in variables.items()} == {
            "QONTO_ACME_LOGIN": "acme-org", "QONTO_ACME_SECRET_KEY": "acme-secret",
            "QONTO_BETA_SARL_LOGIN": "beta-org", "QONTO_BETA_SARL_SECRET_KEY": "beta-secret",
            "QONTO_GAMMA_LOGIN": "gamma-org", "QONTO_GAMMA_SECRET_KEY": "gamma-secret"}
        text = config.read_text() + unit.read_text()
        assert not any(secret in text for secret in ("acme-secret", "beta-secret", "gamma-secret"))
        writable = shlex.split(directives(unit)["ReadWritePaths"])
        for name in ("acme", "beta-sarl", "gamma"):
            assert str((config.parent / name / "inbox").resolve()) in writable
            assert str((config.parent / name / "outbox").resolve()) in writable
        assert str((config.parent / "state").resolve()) in writable  # the rate-limit file's folder
        assert shlex.split(directives(unit)["ExecStart"])[-1] == "run"  # one process for every profile
        # what systemd gives the service is enough to reach every organization
        check = subprocess.run(["bash", "-c", 'set -a && . "$1" && exec "$2" -m agent -c "$3" check', "-",
                                str(env_file), sys.executable, str(config)], capture_output=True, text=True,
                               env=agent_env(), timeout=60)
        assert check.returncode == 0 and check.stdout.count("OK: connected") == 3, check.stdout + check.stderr
        verify(unit)
