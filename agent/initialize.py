"""`init`: write a configuration (asking on a terminal, or from flags), create the folders,
optionally a systemd unit, and check the credentials when there are some.

Secrets are best left to environment variables; when one is written to the file, the file is
made readable by its owner only.
"""

from __future__ import annotations

import getpass
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agent import config as configuration
from agent.base import files
from agent.base.errors import ConfigError

SYSTEMD_UNIT = """\
[Unit]
Description=qonto-agent: inbox folder to Qonto supplier invoices, and the outbox mirror
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={exe} -c {config} run
# Secrets can live here instead of the config file (this unit file is then mode 0600):
# Environment=QONTO_LOGIN=your-org-slug
# Environment=QONTO_SECRET_KEY=...
Restart=on-failure
RestartSec=30
# `run` stops cleanly within 10 s of SIGTERM.
TimeoutStopSec=20
User={user}
# The ledger: $STATE_DIRECTORY/<config name>-<hash>.sqlite (/var/lib/qonto-agent), owned by {user}.
StateDirectory=qonto-agent

[Install]
WantedBy=multi-user.target
"""


@dataclass
class Answers:
    inbox: str
    outbox: str
    base_url: str
    login: str = ""
    secret_key: str = ""
    staging_token: str = ""


def ask(answers: Answers, prompt: Callable[[str], str] = input,
        secret_prompt: Callable[[str], str] = getpass.getpass) -> Answers:
    """Fill in on a terminal what the flags left at their defaults; Enter keeps the default."""
    def question(text: str, default: str) -> str:
        reply = prompt(f"{text} [{default}]: ").strip() if default else prompt(f"{text}: ").strip()
        return reply or default

    answers.inbox = question("Inbox folder (where invoices are dropped)", answers.inbox)
    answers.outbox = question("Outbox folder (where Qonto's invoices are mirrored)", answers.outbox)
    answers.base_url = question("Qonto API root", answers.base_url)
    answers.login = question("Organization login (API key page; Enter to set QONTO_LOGIN later)", answers.login)
    if answers.login and not answers.secret_key:
        answers.secret_key = secret_prompt(
            "Secret key (Enter to keep it out of the file and set QONTO_SECRET_KEY instead): ").strip()
    return answers


def write(path: Path, answers: Answers, *, force: bool) -> configuration.Config:
    """Write the file with `tomli_w`, then load it back (so what was written is known to be valid)."""
    document: dict[str, dict[str, str]] = {
        "qonto": {"base_url": answers.base_url},
        "inbox": {"path": answers.inbox},
        "outbox": {"path": answers.outbox},
    }
    for key in ("login", "secret_key", "staging_token"):
        if getattr(answers, key):
            document["qonto"][key] = getattr(answers, key)
    existed = path.exists()
    configuration.write_config(path, document, force=force)
    cfg = configuration.load(path, need_credentials=False)
    for folder in (cfg.inbox.path, cfg.outbox.path):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if not existed:  # never leave a configuration whose folders could not be made
                path.unlink(missing_ok=True)
            raise ConfigError(f"cannot create the folder {folder} ({exc.strerror or exc}): create it yourself, "
                              "or choose a folder you can write to.") from None
    return cfg


def write_systemd_unit(config_path: Path, *, force: bool) -> Path:
    """`qonto-agent.service` beside the configuration, ready for /etc/systemd/system/."""
    exe = shutil.which("qonto-agent") or f"{sys.executable} -m agent"
    unit = config_path.resolve().parent / "qonto-agent.service"
    if unit.exists() and not force:
        raise ConfigError(f"{unit} already exists: pass --force to overwrite it.")
    user = getpass.getuser()
    try:
        files.write_bytes(unit, SYSTEMD_UNIT.format(exe=exe, config=config_path.resolve(), user=user).encode())
    except OSError as exc:
        raise ConfigError(f"cannot write {unit} ({exc.strerror or exc}): choose a folder you can write to, "
                          "or check its permissions.") from None
    return unit
