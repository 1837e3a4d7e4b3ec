"""`init`: write a configuration (asking on a terminal, or from flags), create the folders,
and check the credentials when there are some (`--systemd` is `systemd_unit.py`).

Secrets are best left to environment variables; when one is written to the file, the file is
made readable by its owner only.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agent import config as configuration
from agent.base.errors import ConfigError


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
