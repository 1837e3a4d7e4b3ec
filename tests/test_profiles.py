"""Profiles: one configuration, several organizations, one process (issue 14).

The agent runs as a real process against a sandbox serving several organizations, each with its
own credentials: files go to their own organization only, each outbox mirrors its own, and one
broken profile never stops the others."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from agent import config as configuration
from agent.base.errors import ConfigError
from agent.sandbox.server import Sandbox
from support import most_in_any_window, run_agent, wait_for, write_pdf, write_profiles_config

ORGS = {"acme": ("acme-org", "acme-secret"), "beta": ("beta-org", "beta-secret"), "gamma": ("gamma-org", "gamma-secret")}


@pytest.fixture
def orgs_sandbox():
    """A sandbox serving the three organizations of ORGS."""
    with Sandbox(analysis_delay_seconds=0.2, seed=7, organizations=tuple(ORGS.values())) as sb:
        yield sb


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _done(root: Path, name: str) -> list[Path]:
    folder = root / name / "inbox" / "done"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _held(sandbox: Sandbox, login: str) -> list[str]:
    """SHA-256 of the attachment of every invoice an organization holds."""
    return sorted(_sha(sandbox.attachment_bytes(i["attachment_id"], organization=login))
                  for i in sandbox.invoices(organization=login))


# ---- the configuration ---------------------------------------------------------------------------

def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None, **kw) -> list[configuration.Config]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return configuration.load_profiles(path, env=env or {}, **kw)


def test_profiles_share_defaults_and_override_them_key_by_key(tmp_path):
    configs = _load(tmp_path, """
[qonto]
base_url = "http://127.0.0.1:9"
client_id = "firm"
[inbox]
settle_seconds = 2.0
[profiles.acme.qonto]
login = "acme"
secret_key = "s1"
[profiles.acme.inbox]
path = "acme/in"
[profiles.beta.qonto]
login = "beta"
secret_key = "s2"
[profiles.beta.inbox]
path = "beta/in"
settle_seconds = 9.0
[profiles.beta.outbox]
path = "beta/out"
[profiles.acme.outbox]
path = "acme/out"
""")
    acme, beta = configs
    assert (acme.profile, beta.profile) == ("acme", "beta")
    assert (acme.qonto.login, beta.qonto.login) == ("acme", "beta")
    assert acme.qonto.client_id == beta.qonto.client_id == "firm"
    assert (acme.inbox.settle_seconds, beta.inbox.settle_seconds) == (2.0, 9.0)
    assert acme.inbox.path == tmp_path / "acme" / "in"
    assert acme.state.path != beta.state.path  # one ledger per profile by default
    assert acme.state.path.name == "config.acme.ledger.sqlite" and acme.previous_ledger is None


def test_a_file_of_one_organization_reads_as_before(tmp_path):
    [cfg] = _load(tmp_path, '[qonto]\nbase_url = "http://127.0.0.1:9"\nlogin = "a"\nsecret_key = "b"\n')
    assert cfg.profile is None and cfg.state.path.name == "config.ledger.sqlite"
    assert configuration.load(tmp_path / "config.toml", env={}) == cfg


PAIR = """
[qonto]
base_url = "http://127.0.0.1:9"
[profiles.acme.inbox]
path = "a/in"
[profiles.acme.outbox]
path = "a/out"
[profiles.acme-2.inbox]
path = "b/in"
[profiles.acme-2.outbox]
path = "b/out"
"""


def test_each_profile_reads_its_own_environment_variables_first(tmp_path):
    env = {"QONTO_LOGIN": "shared", "QONTO_SECRET_KEY": "shared-secret",
           "QONTO_ACME_2_LOGIN": "second", "QONTO_ACME_2_SECRET_KEY": "second-secret"}
    acme, second = _load(tmp_path, PAIR, env)
    assert (acme.qonto.login, acme.qonto.secret_key) == ("shared", "shared-secret")
    assert (second.qonto.login, second.qonto.secret_key) == ("second", "second-secret")


def test_a_profile_key_in_its_table_beats_the_shared_variable(tmp_path):
    text = PAIR + '[profiles.acme.qonto]\nlogin = "own"\nsecret_key = "own-secret"\n'
    acme, _ = _load(tmp_path, text, {"QONTO_LOGIN": "shared", "QONTO_SECRET_KEY": "x"})
    assert (acme.qonto.login, acme.qonto.secret_key) == ("own", "own-secret")


@pytest.mark.parametrize("text, words", [
    ('[profiles.acme.inbox]\npath = "in"\n[profiles.beta.inbox]\npath = "in"\n', "both use"),
    ('[profiles.acme.qonto]\nmax_requests_per_10s = 5\n', "per IP"),
    ('[profiles.Acme.inbox]\npath = "in"\n', "not usable"),
    ('[profiles.acme]\npath = "in"\n', "must hold sections"),
    ("[profiles]\n", "at least one profile"),
])
def test_a_profile_mistake_is_one_sentence(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words):
        _load(tmp_path, '[qonto]\nbase_url = "http://127.0.0.1:9"\n' + text, need_credentials=False)


def test_one_profile_by_name_with_a_hint_for_a_typo(tmp_path):
    [second] = _load(tmp_path, PAIR, need_credentials=False, only="acme-2")
    assert second.profile == "acme-2"
    with pytest.raises(ConfigError, match="did you mean `acme-2`"):
        _load(tmp_path, PAIR, need_credentials=False, only="acme2")
    with pytest.raises(ConfigError, match="--profile"):
        configuration.load(tmp_path / "config.toml", env={}, need_credentials=False)


def test_init_profile_turns_a_file_of_one_organization_into_profiles_keeping_its_ledger(tmp_path):
    config = tmp_path / "config.toml"
    assert run_agent(config, "init", "--no-input", "--base-url", "http://127.0.0.1:9").returncode == 0
    ledger = configuration.load(config, env={}, need_credentials=False).state.path
    done = run_agent(config, "init", "--no-input", "--profile", "beta", "--login", "beta-org")
    assert done.returncode == 0, done.stderr
    assert "QONTO_BETA_SECRET_KEY" in done.stdout
    beta, default = configuration.load_profiles(config, env={}, need_credentials=False)
    assert default.profile == "default" and default.state.path == ledger  # what it uploaded stays known
    assert 'path = "config.ledger.sqlite"' in config.read_text()  # relative: the folder may move
    assert default.inbox.path == tmp_path / "inbox"
    assert beta.inbox.path == tmp_path / "beta" / "inbox" and beta.inbox.path.is_dir()
    assert beta.qonto.login == "beta-org"
    again = run_agent(config, "init", "--no-input", "--profile", "beta")
    assert again.returncode == 2 and "already has a profile `beta`" in again.stderr


# ---- one process, three organizations -------------------------------------------------------------

def test_three_profiles_upload_and_mirror_each_to_its_own_organization(tmp_path, orgs_sandbox, agents):
    config = write_profiles_config(tmp_path, orgs_sandbox.base_url, ORGS)
    dropped = {name: [write_pdf(tmp_path / name / "inbox" / f"{name}-{i}.pdf", f"{name} invoice {i}").read_bytes()
                      for i in range(4 + n)] for n, name in enumerate(ORGS)}
    outside = tmp_path / "elsewhere.pdf"
    write_pdf(outside, "not in any inbox")
    before = outside.read_bytes()
    agent = agents(config, "run")
    for name, (login, _) in ORGS.items():
        wait_for(lambda: len(_done(tmp_path, name)) == len(dropped[name]), 30,
                 message=f"{name}'s files in done/", on_fail=agent.tail)
    sync = run_agent(config, "sync")
    assert sync.returncode == 0, sync.stderr
    assert agent.proc.poll() is None, agent.tail()
    assert agent.stop() == 0
    for name, (login, _) in ORGS.items():
        held = _held(orgs_sandbox, login)
        assert held == sorted(_sha(b) for b in dropped[name])  # exactly its files, nobody else's, no twin
        assert held == sorted(_sha(p.read_bytes()) for p in _done(tmp_path, name))
        mirrored = sorted(_sha(p.read_bytes()) for p in (tmp_path / name / "outbox").glob("*.pdf"))
        assert mirrored == held  # its outbox mirrors its organization only
    assert outside.read_bytes() == before
    log = (tmp_path / "agent.log").read_text()
    assert "[acme]" in log and "[gamma]" in log  # each line names its profile


def test_a_profile_with_a_wrong_secret_never_stops_the_others(tmp_path, orgs_sandbox, agents):
    wrong = dict(ORGS, beta=("beta-org", "not-the-secret"))
    config = write_profiles_config(tmp_path, orgs_sandbox.base_url, wrong)
    for name in ORGS:
        write_pdf(tmp_path / name / "inbox" / f"{name}.pdf", f"{name} invoice")
    agent = agents(config, "run")
    for name in ("acme", "gamma"):
        wait_for(lambda: len(_done(tmp_path, name)) == 1, 30, message=f"{name} uploaded", on_fail=agent.tail)

    def beta_paused():
        shown = run_agent(config, "status", "--json")
        assert shown.stdout, shown.stderr
        data = json.loads(shown.stdout)
        beta = next(p for p in data if p["profile"] == "beta")
        return beta["paused"] and (shown, data)

    shown, data = wait_for(beta_paused, 30, message="beta's pause in status", on_fail=agent.tail)
    assert shown.returncode == 6  # a person is needed, for beta
    assert [p["profile"] for p in data] == ["acme", "beta", "gamma"]
    beta = next(p for p in data if p["profile"] == "beta")
    assert "secret key" in beta["paused"]["reason"] and beta["run_alive"]
    assert len(beta["pending"]) == 1 and (tmp_path / "beta" / "inbox" / "beta.pdf").exists()
    assert orgs_sandbox.invoice_count(organization="beta-org") == 0
    text = run_agent(config, "status")
    assert "beta: running, PAUSED" in text.stdout and "acme: running —" in text.stdout
    sync = run_agent(config, "sync", "--json")
    assert sync.returncode == 4  # beta's credentials refused; the others synced
    results = {r["profile"]: r for r in json.loads(sync.stdout)}
    assert (results["acme"]["verdict"], results["gamma"]["verdict"]) == ("done", "done")
    assert results["beta"]["verdict"] == "error" and "secret key" in results["beta"]["error"]
    assert len(list((tmp_path / "acme" / "outbox").glob("*.pdf"))) == 1
    assert agent.proc.poll() is None, agent.tail()


def test_profile_narrows_every_command(tmp_path, orgs_sandbox):
    config = write_profiles_config(tmp_path, orgs_sandbox.base_url, ORGS)
    for name in ORGS:
        write_pdf(tmp_path / name / "inbox" / f"{name}.pdf", f"{name} invoice")
    check = run_agent(config, "check", "--profile", "acme")
    assert check.returncode == 0 and check.stdout.count("OK: connected") == 1, check.stderr
    upload = run_agent(config, "upload", "--profile", "gamma", "--json")
    assert upload.returncode == 0, upload.stderr
    result = json.loads(upload.stdout)
    assert result["profile"] == "gamma" and result["counts"]["uploaded"] == 1
    assert [orgs_sandbox.invoice_count(organization=login) for login, _ in ORGS.values()] == [0, 0, 1]
    status = json.loads(run_agent(config, "status", "--profile", "gamma", "--json").stdout)
    assert status["profile"] == "gamma" and status["done_count"] == 1
    every = run_agent(config, "upload", "--json")
    assert every.returncode == 0, every.stderr
    assert [r["profile"] for r in json.loads(every.stdout)] == ["acme", "beta", "gamma"]
    assert [orgs_sandbox.invoice_count(organization=login) for login, _ in ORGS.values()] == [1, 1, 1]
    unknown = run_agent(config, "status", "--profile", "acm")
    assert unknown.returncode == 2 and "did you mean `acme`" in unknown.stderr


# ---- one budget for the host ----------------------------------------------------------------------

def _backlog_under_ip_limit(tmp_path: Path, agents, processes: int, profiles: int, files: int) -> None:
    """`profiles` organizations with `files` PDFs each, served by `processes` agents (the profiles
    split between their configurations, one rate-limit file), against a sandbox that answers 429
    above 100 requests in 10 s from one IP: no 429, and no profile goes a minute without progress."""
    names = [f"org{i:02d}" for i in range(profiles)]
    logins = {name: (f"{name}-login", f"{name}-secret") for name in names}
    with Sandbox(analysis_delay_seconds=0.2, seed=3, organizations=tuple(logins.values()),
                 ip_rate_limits=((100, 10.0),)) as sandbox:
        shared = {"max_requests_per_10s": 90, "rate_limit_file": str(tmp_path / "rate-limit.sqlite")}
        roots = [tmp_path / f"agent{p}" for p in range(processes)]
        for p, root in enumerate(roots):
            mine = {n: logins[n] for n in names[p::processes]}
            write_profiles_config(root, sandbox.base_url, mine, qonto=shared)
            for name in mine:
                for i in range(files):
                    write_pdf(root / name / "inbox" / f"{i:03d}.pdf", f"{name} invoice {i}")
        started = [agents(root / "config.toml", "run", verbose=False) for root in roots]
        where = {name: roots[names.index(name) % processes] for name in names}
        last_progress = {name: time.monotonic() for name in names}
        seen = {name: 0 for name in names}

        def all_filed() -> bool:
            now = time.monotonic()
            for name in names:
                count = len(_done(where[name], name))
                if count > seen[name]:
                    seen[name], last_progress[name] = count, now
                assert count == files or now - last_progress[name] < 60, f"{name} made no progress for a minute"
            return all(count == files for count in seen.values())

        wait_for(all_filed, 120 + files * profiles / 20, interval=0.5, message="every profile's backlog filed",
                 on_fail=lambda: "\n".join(a.tail() for a in started))
        assert all(a.stop() == 0 for a in started)
        log = sandbox.request_log()
        refused = [r for r in log if r.status == 429]
        budget = sqlite3.connect(tmp_path / "rate-limit.sqlite")
        sent = [at for (at,) in budget.execute("SELECT at FROM sent")]
        arrived = [r.started_at for r in log if r.path.startswith("/v2/") and r.status != 429]
        assert not refused, (f"{len(refused)} answered 429; most in 10 s: {most_in_any_window(sent, 10.0)} counted "
                             f"in the shared file, {most_in_any_window(arrived, 10.0)} arrived\n"
                             + "\n".join(a.tail(15) for a in started))
        for name in names:
            assert sandbox.invoice_count(organization=logins[name][0]) == files


def test_ten_profiles_with_backlogs_meet_no_429(tmp_path, agents):
    _backlog_under_ip_limit(tmp_path, agents, processes=1, profiles=10, files=40)


def test_two_processes_on_one_host_share_the_budget(tmp_path, agents):
    _backlog_under_ip_limit(tmp_path, agents, processes=2, profiles=6, files=40)


@pytest.mark.slow
def test_ten_profiles_with_200_file_backlogs_meet_no_429_and_all_progress(tmp_path, agents):
    _backlog_under_ip_limit(tmp_path, agents, processes=1, profiles=10, files=200)


@pytest.mark.slow
def test_two_processes_with_200_file_backlogs_meet_no_429(tmp_path, agents):
    _backlog_under_ip_limit(tmp_path, agents, processes=2, profiles=10, files=200)


def test_a_profile_whose_share_is_missing_waits_and_starts_when_it_appears(tmp_path, orgs_sandbox, agents):
    config = write_profiles_config(tmp_path, orgs_sandbox.base_url, ORGS)
    (tmp_path / "beta" / "inbox").rmdir()  # the share is not mounted yet
    write_pdf(tmp_path / "acme" / "inbox" / "a.pdf", "acme invoice")
    agent = agents(config, "run")
    wait_for(lambda: len(_done(tmp_path, "acme")) == 1, 30, message="acme uploaded", on_fail=agent.tail)

    def beta():
        shown = run_agent(config, "status", "--profile", "beta", "--json")
        return shown.returncode == 6 and json.loads(shown.stdout)

    data = wait_for(beta, 30, message="beta's reason in status", on_fail=agent.tail)
    assert "does not exist" in data["paused"]["reason"] and data["run_alive"]
    assert "profile `beta` stopped" in agent.log() and "starts again in" in agent.log()
    write_pdf(tmp_path / "beta" / "inbox" / "b.pdf", "beta invoice")  # the share is back
    wait_for(lambda: len(_done(tmp_path, "beta")) == 1, 40, message="beta uploaded once its inbox exists",
             on_fail=agent.tail)
    assert orgs_sandbox.invoice_count(organization="beta-org") == 1
    started = time.monotonic()
    assert agent.stop() == 0 and time.monotonic() - started < 10  # SIGTERM: every profile stops in time
    shown = run_agent(config, "status")
    assert shown.returncode == 0 and shown.stdout.count("NOT running") == 3, shown.stdout


def test_run_with_a_profile_serves_only_that_one(tmp_path, orgs_sandbox, agents):
    config = write_profiles_config(tmp_path, orgs_sandbox.base_url, ORGS)
    for name in ORGS:
        write_pdf(tmp_path / name / "inbox" / f"{name}.pdf", f"{name} invoice")
    agent = agents(config, "run", "--profile", "beta")  # as `qonto-agent@beta.service` runs it
    wait_for(lambda: len(_done(tmp_path, "beta")) == 1, 30, message="beta uploaded", on_fail=agent.tail)
    data = {p["profile"]: p for p in json.loads(run_agent(config, "status", "--json").stdout)}
    assert data["beta"]["run_alive"] and not data["acme"]["run_alive"]
    assert agent.stop() == 0
    assert [orgs_sandbox.invoice_count(organization=login) for login, _ in ORGS.values()] == [0, 1, 0]
    assert (tmp_path / "acme" / "inbox" / "acme.pdf").exists()


def test_a_clean_stop_while_a_profile_waits_to_start_again_leaves_status_healthy(tmp_path, orgs_sandbox, agents):
    config = write_profiles_config(tmp_path, orgs_sandbox.base_url, ORGS)
    (tmp_path / "gamma" / "inbox").rmdir()
    agent = agents(config, "run")
    wait_for(lambda: "profile `gamma` stopped" in agent.log(), 20, message="gamma's trouble", on_fail=agent.tail)
    assert run_agent(config, "status").returncode == 6  # gamma needs a person while `run` lives
    assert agent.stop() == 0
    shown = run_agent(config, "status", "--json")
    assert shown.returncode == 0, shown.stdout  # stopped cleanly: nobody expects `run` now
    assert not any(p["run_expected"] for p in json.loads(shown.stdout))
