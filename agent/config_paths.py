"""Where a configuration's files go when it does not say: the ledger (one per configuration and
profile, the same for every user and command), the host's rate-limit file, and where older
agents kept their ledger (adopted once). Relative paths are relative to the configuration file."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Mapping


def resolve(path: Path, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else (base_dir / path)


def platform_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """The per-user state folder of this platform, where agents before 2026-12 kept their ledger."""
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    if sys.platform == "win32":
        base = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state")
    return base / "qonto-agent"


SYSTEMD_STATE_DIR = Path("/var/lib/qonto-agent")  # StateDirectory=qonto-agent of the unit `init --systemd` writes


def default_state_path(config_file: Path, env: Mapping[str, str] = os.environ,
                       systemd_dir: Path = SYSTEMD_STATE_DIR, profile: str | None = None) -> Path:
    """One ledger per configuration (and profile), the same for every user and command using it:
    under systemd `$STATE_DIRECTORY/<config stem>[-<profile>]-<hash of its path>.sqlite`, else
    `<config stem>[.<profile>].ledger.sqlite` beside the configuration file. A command run by hand
    (no $STATE_DIRECTORY) for a configuration the service uses finds the service's ledger in
    /var/lib/qonto-agent when it is there."""
    config_file = config_file.absolute()
    digest = hashlib.sha256(str(config_file).encode()).hexdigest()[:8]
    stem = f"{config_file.stem}-{profile}" if profile else config_file.stem
    name = f"{stem}-{digest}.sqlite"
    state_dir = (env.get("STATE_DIRECTORY") or "").split(":")[0]
    if state_dir:
        return Path(state_dir) / name
    if (systemd_dir / name).exists():
        return systemd_dir / name
    return config_file.with_name(f"{config_file.stem}.{profile}.ledger.sqlite" if profile
                                 else f"{config_file.stem}.ledger.sqlite")


def default_rate_limit_path(env: Mapping[str, str] = os.environ) -> Path:
    """The file whose rate budget every agent on the host shares unless told otherwise (Qonto counts
    per IP): `$STATE_DIRECTORY/rate-limit.sqlite` under systemd, else in the per-user state folder.
    Agents of different users share only when pointed at one file they can all write."""
    state_dir = (env.get("STATE_DIRECTORY") or "").split(":")[0]
    return (Path(state_dir) if state_dir else platform_state_dir(env)) / "rate-limit.sqlite"


def previous_state_path(inbox: Path, env: Mapping[str, str] = os.environ) -> Path:
    """Where agents before 2026-12 kept the ledger by default: one per user and inbox."""
    digest = hashlib.sha256(str(inbox.resolve()).encode()).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", inbox.name).strip("-") or "inbox"
    return platform_state_dir(env) / f"{slug}-{digest}.sqlite"


def state_paths(path: Path, base_dir: Path, source: Path | None, inbox: Path, env: Mapping[str, str],
                 profile: str | None) -> tuple[Path, Path | None]:
    """The ledger's path, and where an older agent kept it by default when it is defaulted (older
    agents had no profiles: a profile has nothing to adopt)."""
    if str(path) not in ("", "."):
        return resolve(path, base_dir), None
    config_file = base_dir / (source.name if source else "config.toml")
    return (default_state_path(config_file, env, profile=profile),
            None if profile else previous_state_path(inbox, env))


def rate_limit_path(path: Path, base_dir: Path, env: Mapping[str, str]) -> Path:
    """The configured rate-limit file, or the host-wide default."""
    return resolve(path, base_dir) if path != Path() else default_rate_limit_path(env)
