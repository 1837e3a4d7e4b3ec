"""`[notify]`: who is told when something needs a person, and how (see `agent/notify.py`), kept
apart from `config.py` so that the configuration's core stays small; `config` loads it like any section."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.base.errors import ConfigError
from agent.base.urls import check_api_url, is_loopback

SMTP_SECURITY = ("starttls", "tls", "none")


@dataclass(frozen=True)
class NotifyConfig:
    """Who is told when something needs a person, and how often at most (one digest per interval)."""

    interval_seconds: float = 300.0
    timeout_seconds: float = 10.0  # per message: a mail server or webhook that hangs is given up on
    smtp_host: str = ""  # empty: no e-mail
    smtp_port: int = 587
    smtp_security: str = "starttls"  # starttls | tls | none (loopback only)
    smtp_from: str = ""
    smtp_to: tuple[str, ...] = ()
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)  # QONTO_SMTP_PASSWORD only
    webhook_url: str = ""  # empty: no webhook


def check_notify(n: NotifyConfig) -> None:
    """Refuse a notification setting that could not deliver, or would send a password in clear."""
    if n.smtp_host:
        if not n.smtp_from or not n.smtp_to:
            raise ConfigError("`[notify] smtp_host` is set but `smtp_from` or `smtp_to` is empty: give the sender "
                              'address and a list of recipients, e.g. smtp_to = ["accounts@example.com"].')
        if n.smtp_security not in SMTP_SECURITY:
            raise ConfigError(f'`[notify] smtp_security` is "{n.smtp_security}": use "starttls" (port 587), '
                              '"tls" (port 465) or "none" (a mail relay on this machine only).')
        if n.smtp_security == "none" and not is_loopback(n.smtp_host):
            raise ConfigError(f'`[notify] smtp_security` is "none" for {n.smtp_host}: mail and its password would '
                              'travel unencrypted, so use "starttls" or "tls" ("none" is allowed only for loopback).')
    if n.webhook_url:
        check_api_url(n.webhook_url, "webhook_url", section="notify")
