"""Profiles: one configuration file holding several organizations (`[profiles.NAME]`).

The file's top-level sections are the defaults every profile shares; `[profiles.acme.qonto]`,
`[profiles.acme.inbox]`, ... override them key by key for one profile. A file without
`[profiles]` is one organization, read exactly as before.

Environment variables: `QONTO_ACME_SECRET_KEY` (the profile's name in capitals, `-` as `_`) sets
profile `acme`'s secret; the plain `QONTO_SECRET_KEY` stands for the shared section, so it reaches
a profile only where the profile's own table does not set that key. Credentials of one kind (API
key, or OAuth tokens) a profile has itself shut out the shared ones of the other kind: a token left
in the environment must never sign a profile with its own login in to the token's organization.

The rate limits (`max_requests_per_10s`, `max_requests_per_10min`) are the host's, not an
organization's (Qonto counts per IP address), so only the shared section may set them.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from agent.base.errors import ConfigError
from agent.base.profile import env_name

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
API_KEY, OAUTH = ("login", "secret_key"), ("access_token", "refresh_token")  # the kinds of credentials
HOST_KEYS = frozenset({("qonto", "max_requests_per_10s"), ("qonto", "max_requests_per_10min"),
                       ("qonto", "rate_limit_file")})


@dataclass(frozen=True)
class ProfileDocument:
    """One profile's configuration as TOML data (shared defaults merged in) and the environment
    that applies to it; `name` is None for a file without profiles."""

    name: str | None
    document: dict[str, Any]
    env: Mapping[str, str]


def split(raw: Mapping[str, Any], env: Mapping[str, str], overrides: Mapping[tuple[str, str], str],
          where: str, only: str | None = None) -> list[ProfileDocument]:
    """The profiles a parsed file holds (all, or the one named `only`), each ready to validate."""
    shared = {name: value for name, value in raw.items() if name != "profiles"}
    if "profiles" not in raw:
        if only is not None:
            raise ConfigError(f"{where} has no profiles, so there is no profile `{only}`: leave out --profile, "
                              f"or add one with `qonto-agent init --profile {only}`.")
        return [ProfileDocument(None, dict(shared), env)]
    profiles = raw["profiles"]
    if not isinstance(profiles, dict) or not profiles:
        raise ConfigError(f"[profiles] in {where} must hold at least one profile, e.g. [profiles.acme.qonto].")
    for name, table in profiles.items():
        _check_profile(name, table, where)
    _check_env_names(sorted(profiles))
    if only is not None and only not in profiles:
        close = difflib.get_close_matches(only, sorted(profiles), n=1, cutoff=0.5)
        hint = f"did you mean `{close[0]}`?" if close else f"the profiles are {', '.join(sorted(profiles))}."
        raise ConfigError(f"{where} has no profile `{only}`: {hint}")
    return [ProfileDocument(name, *_inherited(name, shared, table, env, overrides))
            for name, table in sorted(profiles.items()) if only is None or name == only]


def check_distinct(named: list[tuple[str, dict[str, Path]]], folders: frozenset[str]) -> None:
    """No two profiles share an inbox, an outbox or a ledger (each would take the other's files),
    however spelled (`..`, a symlink), and no profile's folder (`folders`) lies in another's."""
    places = [(profile, what, Path(os.path.realpath(place))) for profile, found in named for what, place in found.items()]
    for i, (profile, what, place) in enumerate(places):
        for other, other_what, other_place in places[:i]:
            inside = what in folders and other_what in folders and (
                place.is_relative_to(other_place) or other_place.is_relative_to(place))
            if other != profile and (place == other_place or inside):
                raise ConfigError(f"profiles `{other}` and `{profile}` both use {other_place} ({other}'s {other_what}, "
                                  f"{profile}'s {what} {place}): give each profile its own folders side by side, e.g. "
                                  f"[profiles.{profile}.{what.split()[0]}] path = \"...\".")


def check_same_organization(named: list[tuple[str, dict[str, str]]]) -> None:
    """No two profiles sign in as one organization (one login, one OAuth token): one client's
    invoices would land in another's. The message names no secret."""
    seen: dict[tuple[str, str], str] = {}
    for profile, credentials in named:
        for key, value in credentials.items():
            other = seen.setdefault((key, value), profile) if value else profile
            if other != profile:
                shown = f"login `{value}`" if key == "login" else f"the same {key}"
                raise ConfigError(f"profiles `{other}` and `{profile}` both sign in with {shown}, so both would be one "
                                  f"organization: give `{profile}` its own, e.g. {env_name(profile, key.upper())}.")


def check_name(name: Any) -> None:
    """A profile's name is part of file names and environment variables: keep it plain."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"the profile name `{name}` is not usable: use 1 to 40 lowercase letters, "
                          "digits, `-` or `_`, starting with a letter or digit.")


def _check_profile(name: Any, table: Any, where: str) -> None:
    check_name(name)
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError(f"[profiles.{name}] in {where} must hold sections such as [profiles.{name}.qonto] "
                          f"and [profiles.{name}.inbox], each a table of keys.")
    for section, key in HOST_KEYS:
        if key in table.get(section, {}):
            raise ConfigError(f"`[profiles.{name}.{section}] {key}` in {where}: Qonto counts requests per IP "
                              f"address, so the budget is the host's: set it once in the shared [{section}] section.")


def _check_env_names(names: list[str]) -> None:
    """`a-b` and `a_b` would read the same QONTO_A_B_* variables: one's secret signing in the other."""
    taken: dict[str, str] = {}
    for name in names:
        other = taken.setdefault(env_name(name, ""), name)
        if other != name:
            raise ConfigError(f"profiles `{other}` and `{name}` would both read {env_name(name, '')}* environment "
                              f"variables (`-` reads as `_`): rename one of them.")


def _inherited(name: str, shared: Mapping[str, Any], own: Mapping[str, Any], env: Mapping[str, str],
               overrides: Mapping[tuple[str, str], str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The profile's document and environment, without the shared credentials of a kind other
    than the one it has itself."""
    own_keys = set(own.get("qonto", {}))
    own_keys |= {key for (section, key), variable in overrides.items()
                 if section == "qonto" and env.get(env_name(name, variable))}
    barred = {key for kind, other in ((API_KEY, OAUTH), (OAUTH, API_KEY)) if own_keys & set(kind) for key in other}
    shared_qonto = {k: v for k, v in shared.get("qonto", {}).items() if k not in barred}
    document = _merged({**shared, **({"qonto": shared_qonto} if "qonto" in shared else {})}, own)
    allowed = {section_key: variable for section_key, variable in overrides.items()
               if section_key[0] != "qonto" or section_key[1] not in barred or env.get(env_name(name, variable))}
    return document, _profile_env(name, own, env, allowed)


def _merged(shared: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """The shared sections with the profile's keys laid over them, section by section."""
    merged = {section: dict(values) if isinstance(values, dict) else values for section, values in shared.items()}
    for section, values in own.items():
        base = merged.get(section)
        merged[section] = {**base, **values} if isinstance(base, dict) else dict(values)
    return merged


def _profile_env(name: str, own: Mapping[str, Any], env: Mapping[str, str],
                 overrides: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """The environment as the loader reads it for one profile: its own variables first; a shared
    variable only for a key the profile's table leaves to the shared section."""
    out = {k: v for k, v in env.items() if not k.startswith("QONTO_")}  # the rest (HOME, STATE_DIRECTORY) as is
    for (section, key), variable in overrides.items():
        if env.get(env_name(name, variable)):
            out[variable] = env[env_name(name, variable)]
        elif env.get(variable) and key not in own.get(section, {}):
            out[variable] = env[variable]
    return out
