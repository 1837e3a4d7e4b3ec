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
from agent import profile_settings
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


# The keys that belong to one organization: they move into `[profiles.default]` when a file of one
# organization gains its first profile; everything else stays shared.
OWN_KEYS = {"qonto": ("login", *configuration.SECRET_KEYS), "inbox": ("path",), "outbox": ("path",), "state": ("path",)}
CONVERTED = "default"


def write(path: Path, answers: Answers, *, force: bool, profile: str | None = None) -> list[configuration.Config]:
    """Write the file with `tomli_w` (with `profile`, add that profile to it), then load it back
    (so what was written is known to be valid) and create the folders; the organizations written."""
    own: dict[str, dict[str, str]] = {"inbox": {"path": answers.inbox}, "outbox": {"path": answers.outbox}}
    own["qonto"] = {key: getattr(answers, key) for key in ("login", "secret_key") if getattr(answers, key)}
    existed = path.exists()
    if profile is None:
        document: dict = {"qonto": {"base_url": answers.base_url, **own.pop("qonto")}, **own}
        if answers.staging_token:
            document["qonto"]["staging_token"] = answers.staging_token
        configuration.write_config(path, document, force=force)
    else:
        document = with_profile(path, profile, {k: v for k, v in own.items() if v}, answers, force=force)
        configuration.write_config(path, document, force=True)
    configs = configuration.load_profiles(path, need_credentials=False, only=profile)
    for folder in (folder for cfg in configs for folder in (cfg.inbox.path, cfg.outbox.path)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if not existed:  # never leave a configuration whose folders could not be made
                path.unlink(missing_ok=True)
            raise ConfigError(f"cannot create the folder {folder} ({exc.strerror or exc}): create it yourself, "
                              "or choose a folder you can write to.") from None
    return configs


def with_profile(path: Path, name: str, own: dict[str, dict[str, str]], answers: Answers, *, force: bool) -> dict:
    """The configuration at `path` (or a new one) with profile `name` added. A file of one organization
    becomes profile `default` first, keeping its ledger where it is (what it uploaded stays known)."""
    profile_settings.check_name(name)
    document = configuration.read_document(path) if path.exists() else {"qonto": {"base_url": answers.base_url}}
    profiles = document.setdefault("profiles", {}) if "profiles" in document else _converted(path, document)
    if name in profiles and not force:
        raise ConfigError(f"{path} already has a profile `{name}`: pass --force to replace it.")
    profiles[name] = own
    return document


def _converted(path: Path, document: dict) -> dict:
    """Move a file's organization into `[profiles.default]`; the profiles table (empty for a new file)."""
    document["profiles"] = {}
    if not any(key in document.get(section, {}) for section, keys in OWN_KEYS.items() for key in keys):
        return document["profiles"]  # nothing of an organization yet: the shared defaults stay as they are
    ledger = configuration.load(path, need_credentials=False).state.path
    moved = {section: {key: document[section].pop(key) for key in keys if key in document.get(section, {})}
             for section, keys in OWN_KEYS.items()}
    folder = path.resolve().parent  # written relative to the file where it lies beside it: the folder may move
    moved["state"] = {"path": str(ledger.relative_to(folder) if ledger.is_relative_to(folder) else ledger)}
    document["profiles"][CONVERTED] = {section: keys for section, keys in moved.items() if keys}
    return document["profiles"]
