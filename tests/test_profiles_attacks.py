"""Profiles under a hostile administrator: names that meet in the environment, folders that meet
on disk, and shared credentials that would send one client's invoices to another's organization."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from agent import config as configuration
from agent.base import profile
from agent.base.errors import ConfigError
from agent.qonto.auth import api_refused_hint
from support import run_agent, write_profiles_config

SHARED = '[qonto]\nbase_url = "http://127.0.0.1:9"\n'


def _profile(name: str, inbox: str, outbox: str, qonto: str = "") -> str:
    return (f"[profiles.{name}.qonto]\n{qonto}\n[profiles.{name}.inbox]\npath = \"{inbox}\"\n"
            f"[profiles.{name}.outbox]\npath = \"{outbox}\"\n")


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None, **kw) -> list[configuration.Config]:
    path = tmp_path / "config.toml"
    path.write_text(SHARED + text)
    path.chmod(0o600)
    return configuration.load_profiles(path, env=env or {}, **kw)


def test_two_names_meeting_in_one_environment_variable_are_refused(tmp_path):
    """`a-b` and `a_b` both read QONTO_A_B_SECRET_KEY: one client's secret would sign in the other."""
    text = _profile("a-b", "i1", "o1", 'login = "one"') + _profile("a_b", "i2", "o2", 'login = "two"')
    with pytest.raises(ConfigError, match=r"`a-b` and `a_b`.*QONTO_A_B_"):
        _load(tmp_path, text, {"QONTO_A_B_SECRET_KEY": "s"})


@pytest.mark.parametrize("second", ["y/../x", "link", "x/sub", "o1/sub"])
def test_folders_meeting_through_another_spelling_or_inside_another_profiles_are_refused(tmp_path, second):
    """A symlink, `..`, or a folder inside another profile's inbox or outbox: one profile would take
    (with `recursive`) or mirror over the other's files."""
    (tmp_path / "x").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "x")
    text = _profile("a", "x", "o1") + _profile("b", second, "o2")
    with pytest.raises(ConfigError, match="profiles `a` and `b`"):
        _load(tmp_path, text, need_credentials=False)


def test_side_by_side_folders_stay_allowed(tmp_path):
    text = _profile("a", "clients/a/in", "clients/a/out") + _profile("b", "clients/ab/in", "clients/ab/out")
    assert [c.profile for c in _load(tmp_path, text, need_credentials=False)] == ["a", "b"]


def test_a_shared_oauth_token_never_replaces_a_profiles_own_api_key(tmp_path):
    """QONTO_ACCESS_TOKEN left from a one-organization setup must not switch a profile that signs in
    with its own login and secret over to that token's organization."""
    text = _profile("acme", "i1", "o1", 'login = "acme"\nsecret_key = "acme-secret"')
    [acme] = _load(tmp_path, text, {"QONTO_ACCESS_TOKEN": "other-org-token"})
    assert acme.qonto.auth_mode == "api_key" and not acme.qonto.access_token


def test_a_shared_login_never_replaces_a_profiles_own_oauth_token(tmp_path):
    text = SHARED.replace("[qonto]\n", '[qonto]\nlogin = "shared"\nsecret_key = "x"\n', 1)
    path = tmp_path / "config.toml"
    path.write_text(text + _profile("acme", "i1", "o1"))
    path.chmod(0o600)
    [acme] = configuration.load_profiles(path, env={"QONTO_ACME_REFRESH_TOKEN": "r", "QONTO_CLIENT_ID": "c",
                                                    "QONTO_CLIENT_SECRET": "s"})
    assert acme.qonto.auth_mode == "oauth" and not acme.qonto.login and not acme.qonto.secret_key


def test_two_profiles_signing_in_as_one_organization_are_refused(tmp_path):
    """Two profiles without credentials of their own both take the shared token: two clients'
    invoices would land in one organization."""
    text = _profile("acme", "i1", "o1") + _profile("beta", "i2", "o2")
    env = {"QONTO_ACCESS_TOKEN": "tok-of-one-org"}
    with pytest.raises(ConfigError, match="`acme` and `beta`.*QONTO_BETA_") as caught:
        _load(tmp_path, text, env)
    assert "tok-of-one-org" not in str(caught.value)
    assert len(_load(tmp_path, text, env, need_credentials=False)) == 2  # `status` still reads it


def test_status_goes_on_past_a_profile_whose_ledger_it_cannot_read(tmp_path):
    """One client's corrupt ledger must not blind the firm to the other forty: every profile is
    shown, the broken one with the sentence that says what to do; the exit code is that of the
    broken ledger (2), as for a file of one organization."""
    config = write_profiles_config(tmp_path, "http://127.0.0.1:9", {"acme": ("a", "s1"), "beta": ("b", "s2")})
    broken = tmp_path / "state" / "acme.sqlite"
    broken.parent.mkdir()
    broken.write_bytes(b"not a database, just some text\n" * 40)
    text = run_agent(config, "status")
    assert text.returncode == 2 and "Traceback" not in text.stderr
    assert "acme: CANNOT READ" in text.stdout and "not a valid database" in text.stdout
    assert "beta: NOT running" in text.stdout
    shown = run_agent(config, "status", "--json")
    assert shown.returncode == 2
    acme, beta = json.loads(shown.stdout)
    assert acme["profile"] == "acme" and "move it aside" in acme["error"]
    assert beta["profile"] == "beta" and beta["pending"] == [] and "error" not in beta


def test_refused_credentials_name_the_profiles_own_settings():
    """A 401 in profile `acme-2` points at QONTO_ACME_2_*, not at the plain variables that may be
    what signed it in wrongly (run in a thread of its own: the profile is per thread)."""
    hints: list[str] = []

    def in_profile() -> None:
        profile.enter("acme-2")
        hints.extend([api_refused_hint(False), api_refused_hint(True)])

    worker = threading.Thread(target=in_profile)
    worker.start()
    worker.join()
    assert "`[profiles.acme-2.qonto] login`" in hints[0] and "QONTO_ACME_2_SECRET_KEY" in hints[0]
    assert "QONTO_ACME_2_ACCESS_TOKEN" in hints[1] and "QONTO_ACCESS_TOKEN " not in hints[1]
    assert "(or QONTO_LOGIN / QONTO_SECRET_KEY)" in api_refused_hint(False)  # no profile: as before
