"""TOML configuration → frozen dataclasses, validated with sentences a person can act on.

The file is read with `tomllib`; environment variables override it; relative paths are
relative to the config file. `write_config` (for `init`) writes with `tomli_w`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from agent.base import files, times
from agent.base.urls import check_api_url
from agent.config_values import build, nearest
from agent.notify_settings import NotifyConfig, check_notify
from agent import profile_settings
from agent.config_paths import rate_limit_path, resolve, state_paths
from agent.base.errors import ConfigError
from agent.qonto.limits import KEY_WINDOW_SECONDS, MAX_ITEMS

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 8  # attachment downloads at once; the client's connection pool holds 10

# Environment variables that override the file, by the key they override.
ENV_OVERRIDES: dict[tuple[str, str], str] = {
    ("qonto", "base_url"): "QONTO_BASE_URL",
    ("qonto", "login"): "QONTO_LOGIN",
    ("qonto", "secret_key"): "QONTO_SECRET_KEY",
    ("qonto", "access_token"): "QONTO_ACCESS_TOKEN",
    ("qonto", "refresh_token"): "QONTO_REFRESH_TOKEN",
    ("qonto", "client_id"): "QONTO_CLIENT_ID",
    ("qonto", "client_secret"): "QONTO_CLIENT_SECRET",
    ("qonto", "staging_token"): "QONTO_STAGING_TOKEN",
    ("notify", "smtp_username"): "QONTO_SMTP_USERNAME",
    ("notify", "smtp_password"): "QONTO_SMTP_PASSWORD",
}
ENV_ONLY = {("notify", "smtp_password")}  # never read from the file: a mail password stays in the environment
SECRET_KEYS = ("secret_key", "access_token", "refresh_token", "client_secret", "staging_token")


@dataclass(frozen=True)
class QontoConfig:
    """How to reach Qonto and who we are there. Secrets are kept out of repr()."""

    base_url: str = "https://thirdparty.qonto.com"
    login: str = ""
    secret_key: str = field(default="", repr=False)
    access_token: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    token_url: str = "https://oauth.qonto.com/oauth2/token"
    staging_token: str = field(default="", repr=False)
    timeout_seconds: float = 30.0
    max_requests_per_10s: int = 900  # Qonto allows 1,000 per 10 s per IP: keep a margin
    max_requests_per_10min: int = 9000  # ... and 10,000 per 10 min
    rate_limit_file: Path = Path()  # resolved by `load` (`default_rate_limit_path` when empty); unresolved: none
    idempotency_window_seconds: float = KEY_WINDOW_SECONDS

    @property
    def api_root(self) -> str:
        """The base URL without a trailing slash or `/v2`: paths add `/v2/...` themselves."""
        root = self.base_url.rstrip("/")
        return root[: -len("/v2")] if root.endswith("/v2") else root

    @property
    def auth_mode(self) -> str | None:
        """'oauth' when a token is configured, 'api_key' for login + secret, else None."""
        if self.access_token or self.refresh_token:
            return "oauth"
        if self.login and self.secret_key:
            return "api_key"
        return None

    def secrets(self) -> list[str]:
        """Every configured secret value, so logs and files can be checked against them."""
        return [v for v in (getattr(self, k) for k in SECRET_KEYS) if v]


@dataclass(frozen=True)
class InboxConfig:
    path: Path = Path("inbox")
    patterns: tuple[str, ...] = ("*.pdf", "*.jpg", "*.jpeg", "*.png")  # what Qonto takes
    recursive: bool = False
    polling: bool | str = "auto"
    poll_interval_seconds: float = 5.0
    rescan_seconds: float = 300.0
    settle_seconds: float = 5.0
    debounce_seconds: float = 2.0
    max_wait_seconds: float = 30.0
    batch_size: int = MAX_ITEMS
    incomplete_after_seconds: float = 3600.0  # a file still looking unfinished goes to error/ then


@dataclass(frozen=True)
class OutboxConfig:
    path: Path = Path("outbox")
    sync_interval_seconds: float = 900.0
    since: str | None = None
    concurrency: int = 4  # invoices mirrored at once; their attachment reads count against the rate limiter


@dataclass(frozen=True)
class StateConfig:
    path: Path = Path()  # resolved by `load`: beside the configuration (or $STATE_DIRECTORY) when empty


@dataclass(frozen=True)
class StatusConfig:
    metrics_file: Path | None = None  # Prometheus text file `run` rewrites at each heartbeat; None: none


@dataclass(frozen=True)
class Config:
    qonto: QontoConfig
    inbox: InboxConfig
    outbox: OutboxConfig
    state: StateConfig
    status: StatusConfig = StatusConfig()
    notify: NotifyConfig = NotifyConfig()
    source: Path | None = None  # the file it came from, for messages
    profile: str | None = None  # its name in a file with `[profiles]`; None for a file of one organization
    previous_ledger: Path | None = None  # where an older agent kept the ledger by default (per user), to adopt

    @property
    def token_store(self) -> Path:
        """Where rotated OAuth tokens are kept between starts (mode 0600, beside the ledger)."""
        return self.state.path.with_suffix(".oauth.json")

    @property
    def run_lock(self) -> Path:
        """The lock `run` holds while alive (beside the ledger): `status` tries it to tell if it is."""
        return self.state.path.with_name(self.state.path.name + ".run-lock")

    @property
    def label(self) -> str:
        """How messages name this organization: its profile, or the configuration file."""
        return f"profile `{self.profile}`" if self.profile else str(self.source or "the configuration")


SECTIONS: dict[str, type] = {
    "qonto": QontoConfig,
    "inbox": InboxConfig,
    "outbox": OutboxConfig,
    "state": StateConfig,
    "status": StatusConfig,
    "notify": NotifyConfig,
}


def default_config_path(env: Mapping[str, str] = os.environ) -> Path:
    """`$QONTO_AGENT_CONFIG`, else `./config.toml` (DESIGN.md)."""
    return Path(env.get("QONTO_AGENT_CONFIG") or "config.toml")


def load(
    path: Path | str | None = None,
    env: Mapping[str, str] = os.environ,
    *,
    need_credentials: bool = True,
    profile: str | None = None,
) -> Config:
    """Read, merge with the environment, and validate the configuration of one organization: the
    file's only one, or its profile named `profile`."""
    configs = load_profiles(path, env, need_credentials=need_credentials, only=profile)
    if len(configs) > 1:
        names = ", ".join(c.profile or "" for c in configs)
        raise ConfigError(f"{configs[0].source} holds {len(configs)} profiles ({names}): name one with --profile NAME.")
    return configs[0]


def load_profiles(
    path: Path | str | None = None,
    env: Mapping[str, str] = os.environ,
    *,
    need_credentials: bool = True,
    only: str | None = None,
) -> list[Config]:
    """Every organization the file describes (`[profiles]`, or the file itself), or just `only`.

    A missing file is an error when credentials are needed; commands that only read local state
    (`status`) may run on defaults.
    """
    path = Path(path) if path is not None else default_config_path(env)
    raw: dict[str, Any] = {}
    if path.exists():
        raw = read_document(path)
        _warn_if_secret_readable(path, raw)
    elif need_credentials:
        raise ConfigError(
            f"no configuration file at {path}: create one with `qonto-agent init`, "
            "or pass -c CONFIG (or set QONTO_AGENT_CONFIG)."
        )
    configs = [from_mapping(p.document, env=p.env, base_dir=path.resolve().parent, source=path,
                            need_credentials=need_credentials, profile=p.name)
               for p in profile_settings.split(raw, env, ENV_OVERRIDES, str(path), only)]
    profile_settings.check_distinct([(c.profile or "", {"inbox path": c.inbox.path, "outbox path": c.outbox.path,
                                                       "state path": c.state.path}) for c in configs],
                                    folders=frozenset({"inbox path", "outbox path"}))
    if need_credentials:
        profile_settings.check_same_organization(
            [(c.profile or "", {"login": c.qonto.login, "access_token": c.qonto.access_token,
                                "refresh_token": c.qonto.refresh_token}) for c in configs])
    return configs


def read_document(path: Path) -> dict[str, Any]:
    """The file's TOML as data, or a ConfigError saying what to fix."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}): fix the line it names.") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror}): check its permissions.") from None


def from_mapping(
    raw: Mapping[str, Any],
    *,
    env: Mapping[str, str] = os.environ,
    base_dir: Path = Path("."),
    source: Path | None = None,
    need_credentials: bool = True,
    profile: str | None = None,
) -> Config:
    """Validate an already-parsed TOML document of one organization (the loader's second half,
    also used by tests); `profile` names it in a file with `[profiles]`."""
    where = str(source) if source else "the configuration"
    _check_unknown(raw, where)
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = dict(raw.get(name, {}))
        for (sec, key), var in ENV_OVERRIDES.items():
            if sec == name and env.get(var):
                values[key] = env[var]
        sections[name] = build(cls, name, values)

    q: QontoConfig = sections["qonto"]
    inbox: InboxConfig = sections["inbox"]
    outbox: OutboxConfig = sections["outbox"]
    state: StateConfig = sections["state"]
    metrics_file = sections["status"].metrics_file
    check_notify(sections["notify"])

    _check_values(q, inbox, outbox)
    if need_credentials:
        check_credentials(q)

    inbox_path = resolve(inbox.path, base_dir)
    outbox_path = resolve(outbox.path, base_dir)
    if inbox_path == outbox_path:
        raise ConfigError("`[inbox] path` and `[outbox] path` are the same folder: give each its own.")
    state_path, previous = state_paths(state.path, base_dir, source, inbox_path, env, profile)
    return Config(
        qonto=dataclasses.replace(q, rate_limit_file=rate_limit_path(q.rate_limit_file, base_dir, env)),
        inbox=dataclasses.replace(inbox, path=inbox_path,
                                  patterns=tuple(p.lower() for p in inbox.patterns)),
        outbox=dataclasses.replace(outbox, path=outbox_path),
        state=StateConfig(path=state_path),
        status=StatusConfig(metrics_file=_metrics_path(metrics_file, base_dir, profile)),
        notify=sections["notify"],
        source=source,
        profile=profile,
        previous_ledger=previous,
    )


def _check_values(q: QontoConfig, inbox: InboxConfig, outbox: OutboxConfig) -> None:
    """The checks a value's type alone does not make: URLs, Qonto's limits, a parseable `since`."""
    check_api_url(q.base_url, "base_url")
    if q.auth_mode == "oauth" or q.client_id:
        check_api_url(q.token_url, "token_url")
    if not 1 <= inbox.batch_size <= MAX_ITEMS:
        raise ConfigError(
            f"`[inbox] batch_size` is {inbox.batch_size}: Qonto takes 1 to {MAX_ITEMS} invoices "
            f"per request, so set it between 1 and {MAX_ITEMS}."
        )
    if not inbox.patterns:
        raise ConfigError('`[inbox] patterns` is empty: list at least one, e.g. ["*.pdf"].')
    if not 1 <= outbox.concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"`[outbox] concurrency` is {outbox.concurrency}: set it between 1 and "
                          f"{MAX_CONCURRENCY} (more downloads at once only meet Qonto's rate limit sooner).")
    if outbox.since is not None:
        parse_timestamp(outbox.since, "`[outbox] since`")


def _metrics_path(path: Path | None, base_dir: Path, profile: str | None) -> Path | None:
    """The metrics file; a profile's carries its name (`agent.prom` → `agent-acme.prom`), so that
    profiles sharing the setting write files side by side for the textfile collector to read."""
    if not path:
        return None
    path = resolve(Path(path), base_dir)
    return path.with_name(f"{path.stem}-{profile}{path.suffix}") if profile else path


def check_credentials(q: QontoConfig) -> None:
    """Refuse a configuration that has no way to authenticate, naming what to set."""
    if q.auth_mode == "oauth":
        if not q.access_token and not (q.client_id and q.client_secret):
            raise ConfigError(
                "an OAuth refresh_token needs `[qonto] client_id` and `client_secret` "
                "(or QONTO_CLIENT_ID and QONTO_CLIENT_SECRET) to get access tokens."
            )
        return
    if q.auth_mode is None:
        missing = "secret_key" if q.login else "login"
        env_var = ENV_OVERRIDES[("qonto", missing)]
        raise ConfigError(
            f"no Qonto credentials: set `[qonto] {missing}` (or {env_var}); "
            "API keys are under Settings > Integrations & partnerships > API key in Qonto, "
            "or use OAuth with `access_token`/`refresh_token`."
        )


def parse_timestamp(value: str, what: str) -> datetime:
    """An RFC 3339 timestamp with a time zone, or a ConfigError that shows the expected form."""
    parsed = times.parse(value)
    if parsed is None:
        raise ConfigError(f'{what} is "{value}": write a time with its zone, e.g. "2026-01-01T00:00:00Z".')
    return parsed


def _check_unknown(raw: Mapping[str, Any], where: str) -> None:
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"unknown section [{name}] in {where}{nearest(name, SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] in {where} must be a table of keys, not a single value.")
        known = {f.name for f in dataclasses.fields(SECTIONS[name])}
        for key in value:
            if (name, key) in ENV_ONLY:
                raise ConfigError(f"`[{name}] {key}` is read from the environment only, never from a file: remove "
                                  f"it from {where} and set {ENV_OVERRIDES[(name, key)]} instead.")
            if key not in known:
                raise ConfigError(f"unknown key `[{name}] {key}` in {where}{nearest(key, known)}")


def holds_secret(document: Mapping[str, Any]) -> bool:
    """Whether a configuration document writes a secret, in its [qonto] or in a profile's."""
    tables = [document, *(p for p in document.get("profiles", {}).values() if isinstance(p, dict))]
    return any(isinstance(t.get("qonto"), dict) and any(t["qonto"].get(k) for k in SECRET_KEYS) for t in tables)


def _warn_if_secret_readable(path: Path, raw: Mapping[str, Any]) -> None:
    if os.name != "posix" or not holds_secret(raw):
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "%s holds a secret and other users can read it: run `chmod 600 %s`, "
            "or move the secret to an environment variable (e.g. QONTO_SECRET_KEY).", path, path,
        )


def write_config(path: Path, document: Mapping[str, Any], *, force: bool = False) -> None:
    """Write a configuration with `tomli_w`; 0600 when it holds a secret; never clobber silently."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists: pass --force to overwrite it.")
    has_secret = holds_secret(document)
    try:  # whole or not at all: a temporary beside it, renamed over it
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_bytes(path, tomli_w.dumps(document).encode(), mode=0o600 if has_secret else 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write {path} ({exc.strerror or exc}): choose a folder you can write to, "
                          "or check its permissions.") from None
