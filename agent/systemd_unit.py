"""`init --systemd`: a unit that runs `run` as a dedicated user, sandboxed to the folders it
writes, and an EnvironmentFile for the secrets.

The secrets go to `qonto-agent.env` (mode 0600; systemd reads it as root before dropping to the
service's user) and out of the configuration, which the service's user must be able to read:
the unit holds none, so `systemctl show` exposes none. Both files are written beside the
configuration; the unit is then copied to /etc/systemd/system/ (README: Running it as a service).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from agent import config as configuration
from agent import profile_settings
from agent.config_paths import SYSTEMD_STATE_DIR
from agent.base import files
from agent.base.errors import ConfigError

DEFAULT_USER = "qonto-agent"
UNIT_NAME = "qonto-agent.service"
ENV_NAME = "qonto-agent.env"
STATE_DIR = SYSTEMD_STATE_DIR  # where StateDirectory=qonto-agent puts the ledger
USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
HOMES = ("/home", "/root", "/run/user")  # hidden by ProtectHome=yes
TEMPS = ("/tmp", "/var/tmp")  # replaced by PrivateTmp=yes

UNIT = """\
[Unit]
Description=qonto-agent: inbox folder to Qonto supplier invoices, and the outbox mirror
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={exec_start}
User={user}
# QONTO_* secrets: in this file (mode 0600, read by systemd as root), never in the unit.
EnvironmentFile={env_file}
# The ledger and OAuth tokens: $STATE_DIRECTORY ({state_dir}), owned by {user}.
StateDirectory=qonto-agent
Restart=on-failure
RestartSec=30
# `run` stops cleanly within 10 s of SIGTERM.
TimeoutStopSec=20

# Sandbox: everything read-only but the inbox, the outbox and the ledger's folder.
ProtectSystem=strict
ReadWritePaths={read_write}
{protect_home}
{private_tmp}
PrivateDevices=yes
PrivateMounts=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
ProtectProc=invisible
ProtectClock=yes
ProtectHostname=yes
ProtectControlGroups=yes
ProtectKernelLogs=yes
ProtectKernelModules=yes
ProtectKernelTunables=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# Not set, on purpose: MemoryDenyWriteExecute= (ctypes, which the agent uses for renameat2, may
# need writable code), PrivateUsers= (shared inbox folders rely on group permissions),
# ProcSubset=pid (file-system types are read from /proc), UMask= (the outbox is read by others).

[Install]
WantedBy=multi-user.target
"""


def service_user(name: str) -> str:
    """`--user`: a dedicated account, never root (argparse turns the refusal into exit code 2)."""
    if name in ("root", "0"):
        raise argparse.ArgumentTypeError(
            "the service must not run as root: give --user a dedicated user (default: qonto-agent)")
    if not USER_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a valid user name: use letters, digits, _, - and . (e.g. qonto-agent)")
    return name


def write(config_path: Path, configs: list[configuration.Config], *, user: str, force: bool) -> str:
    """Write the EnvironmentFile, move the secrets out of the configuration, write the unit; return
    what to do next. `configs` are the organizations as `init` loaded them (their secrets included);
    the unit runs them all in one process."""
    config_path = config_path.resolve()
    unit, env_file = config_path.with_name(UNIT_NAME), config_path.with_name(ENV_NAME)
    for path in (unit, env_file):
        if path.exists() and not force:
            raise ConfigError(f"{path} already exists: pass --force to overwrite it.")
    services = configuration.load_profiles(config_path, env={"STATE_DIRECTORY": str(STATE_DIR)},
                                           need_credentials=False)
    folders = [folder for c in services for folder in (c.inbox.path, c.outbox.path)]
    state = [folder for c in services for folder in (c.state.path.parent, c.qonto.rate_limit_file.parent)]
    text = render(_executable(), config_path, env_file, user, [*folders, *state])
    variables = {name: value for c in configs for name, value in environment(c.qonto, c.profile).items()}
    _write(env_file, environment_file(variables), 0o600)
    _drop_secrets(config_path)
    _write(unit, text, 0o644)
    return instructions(unit, env_file, user, folders, missing=[name for name, value in variables.items() if not value])


def render(executable: list[str], config_path: Path, env_file: Path, user: str, writable: list[Path]) -> str:
    """The unit's text. ProtectHome= and PrivateTmp= give way (with the reason, in a comment) when a
    path the service needs lies where they would hide it."""
    command = [*executable, "-c", str(config_path), "run"]
    paths = [Path(executable[0]), config_path, env_file, *writable]
    home, temp = _first_below(paths, HOMES), _first_below(paths, TEMPS)
    protect_home = (f"# read-only, not yes: {home} is under a home folder\nProtectHome=read-only" if home
                    else "ProtectHome=yes")
    private_tmp = (f"# no, not yes: {temp} is under a temporary folder\nPrivateTmp=no" if temp
                   else "PrivateTmp=yes")
    read_write = " ".join(dict.fromkeys(_word(str(p.resolve())) for p in writable))
    return UNIT.format(exec_start=" ".join(_word(arg, execute=True) for arg in command), user=user,
                       env_file=_word(str(env_file), bare=True), state_dir=STATE_DIR, read_write=read_write,
                       protect_home=protect_home, private_tmp=private_tmp)


def environment(qonto: configuration.QontoConfig, profile: str | None = None) -> dict[str, str]:
    """QONTO_* variables for the EnvironmentFile: the login and every secret the configuration has;
    empty placeholders for an API key when it has no way to authenticate. A profile's variables
    carry its name (QONTO_ACME_SECRET_KEY)."""
    keys = ("login", *configuration.SECRET_KEYS)
    found = {configuration.ENV_OVERRIDES[("qonto", k)]: getattr(qonto, k) for k in keys if getattr(qonto, k)}
    if qonto.auth_mode is None:
        found = {"QONTO_LOGIN": qonto.login, "QONTO_SECRET_KEY": ""} | found
    return {profile_settings.env_name(profile, name) if profile else name: value for name, value in found.items()}


def environment_file(variables: dict[str, str]) -> str:
    """`KEY="value"` lines, escaped as systemd (and a POSIX shell) read double quotes."""
    lines = ["# Secrets of qonto-agent.service (EnvironmentFile=). systemd reads this file as root: keep it",
             "# mode 0600. Fill in what is empty, or use OAuth instead: QONTO_ACCESS_TOKEN, QONTO_REFRESH_TOKEN,",
             "# QONTO_CLIENT_ID, QONTO_CLIENT_SECRET. Then: sudo systemctl restart qonto-agent"]
    for name, value in variables.items():
        lines.append(f'{name}="{_escaped(value)}"' if value else f"{name}=")
    return "\n".join(lines) + "\n"


def instructions(unit: Path, env_file: Path, user: str, folders: list[Path], missing: list[str]) -> str:
    """What `init --systemd` prints: the files, then the commands that install the service."""
    q = shlex.quote
    steps = [f"wrote {unit} and {env_file} (the secrets, mode 0600; the configuration holds none)"]
    if missing:
        steps.append(f"fill in {' and '.join(missing)} in {env_file}, then install the service:")
    else:
        steps.append("install the service:")
    steps += [f"  id -u {user} >/dev/null 2>&1 || sudo useradd --system --home-dir {STATE_DIR} "
              f"--shell /usr/sbin/nologin {user}",
              f"  sudo chown -R {user}: {' '.join(q(str(f)) for f in folders)}   # {user} writes them",
              f"  sudo cp {q(str(unit))} /etc/systemd/system/{UNIT_NAME}",
              "  sudo systemctl daemon-reload && sudo systemctl enable --now qonto-agent",
              "  journalctl -u qonto-agent -f"]
    return "\n".join(steps)


def _executable() -> list[str]:
    """The `qonto-agent` of this installation (its venv's script), else this Python with `-m agent`."""
    python = Path(sys.executable).absolute()  # not resolved: a venv's python is a link that must stay
    script = python.with_name("qonto-agent")
    return [str(script)] if script.is_file() else [str(python), "-m", "agent"]


def _escaped(value: str) -> str:
    """Inside double quotes, systemd and a POSIX shell both take `\\`, `"`, `$` and `` ` `` escaped."""
    return re.sub(r'([\\"$`])', r"\\\1", value)


def _first_below(paths: list[Path], roots: tuple[str, ...]) -> Path | None:
    for path in paths:
        if any(path.resolve().is_relative_to(root) for root in roots):
            return path
    return None


def _word(text: str, *, execute: bool = False, bare: bool = False) -> str:
    """One argument in unit-file syntax: `%` (and `$` in commands) escaped, quoted when needed."""
    if "\n" in text:
        raise ConfigError(f"{text!r} holds a line break, which a systemd unit cannot name: "
                          "choose a path without one.")
    text = text.replace("%", "%%")
    if execute:
        text = text.replace("$", "$$")
    if bare or not re.search(r"[\s\"'\\;]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _drop_secrets(config_path: Path) -> None:
    """Rewrite the configuration without its secrets (now in the EnvironmentFile): readable by all."""
    document = configuration.read_document(config_path)
    if configuration.holds_secret(document):
        tables = [document, *document.get("profiles", {}).values()]
        for table in (t for t in tables if "qonto" in t):
            table["qonto"] = {k: v for k, v in table["qonto"].items() if k not in configuration.SECRET_KEYS}
        configuration.write_config(config_path, document, force=True)


def _write(path: Path, text: str, mode: int) -> None:
    try:
        files.write_bytes(path, text.encode(), mode=mode)
    except OSError as exc:
        raise ConfigError(f"cannot write {path} ({exc.strerror or exc}): choose a folder you can write to, "
                          "or check its permissions.") from None
