"""Telling a person when something needs them: files put in error/, credentials or a folder to fix,
the agent stopping unexpectedly. Opt-in (`[notify]`), by e-mail over SMTP and/or a JSON webhook.

Events are gathered into a digest sent `interval_seconds` after its first event (or at once when
the agent stops), so a burst of refused files is one message, never one per file, and two messages
are always at least an interval apart. Sending happens on a background thread with timeouts: a
mail server or webhook that is down costs one log line per digest, and never stops or slows the
agent. `service` feeds it events: the uploader's `on_error`, the heartbeat's pause reason, and
how `run` ended.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Callable

import requests

from agent import logs
from agent.base import profile
from agent.base.times import iso
from agent.config import Config
from agent.notify_settings import NotifyConfig

log = logging.getLogger(__name__)

MAX_LISTED = 200  # events listed in one message; the rest are counted
REFUSED, PERSON, STOPPED = "refused", "needs_person", "stopped"


@dataclass(frozen=True)
class Event:
    """One thing a person should know: `text` is the line a message shows."""

    kind: str
    at: float  # wall clock
    text: str
    file: str | None = None
    reason: str | None = None
    hint: str | None = None


@dataclass
class Digest:
    """The events of one interval, as an e-mail and as a webhook's JSON."""

    host: str
    inbox: str
    events: list[Event] = field(default_factory=list)
    profile: str | None = None  # the organization's profile, in a configuration with several

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e.kind == kind)

    def subject(self) -> str:
        parts = []
        if refused := self.count(REFUSED):
            parts.append(f"{refused} file(s) put in error/")
        if self.count(PERSON):
            parts.append("something needs a person")
        if self.count(STOPPED):
            parts.append("the agent stopped unexpectedly")
        where = f"{self.host} (profile {self.profile})" if self.profile else self.host
        return f"qonto-agent on {where}: " + ", ".join(parts)

    def email(self, config: NotifyConfig) -> EmailMessage:
        sections = [(REFUSED, "Files put in error/ (each has a .error.json beside it saying why; move a file back "
                              "into the inbox to try again):"),
                    (PERSON, "Needs a person (`qonto-agent status` shows it too):"),
                    (STOPPED, "The agent stopped:")]
        times = [e.at for e in self.events]
        lines = [f"qonto-agent on {self.host}, inbox {self.inbox}, from {iso(min(times))} to {iso(max(times))}.", ""]
        listed = self.events[:MAX_LISTED]
        for kind, title in sections:
            texts = [e.text for e in listed if e.kind == kind]
            if texts:
                lines += [f"{title} {self.count(kind)}", *(f"- {t}" for t in texts), ""]
        if len(self.events) > len(listed):
            lines.append(f"... and {len(self.events) - len(listed)} more: see the log and `qonto-agent status`.")
        message = EmailMessage()
        message["Subject"] = self.subject()
        message["From"] = config.smtp_from
        message["To"] = ", ".join(config.smtp_to)
        message.set_content("\n".join(lines))
        return message

    def payload(self) -> dict:
        listed = self.events[:MAX_LISTED]
        return {"agent": "qonto-agent", "host": self.host, "profile": self.profile, "inbox": self.inbox,
                "summary": self.subject(),
                "counts": {kind: self.count(kind) for kind in (REFUSED, PERSON, STOPPED)},
                "events": [{"kind": e.kind, "at": iso(e.at), "file": e.file, "reason": e.reason, "hint": e.hint,
                            "text": e.text} for e in listed],
                "more": len(self.events) - len(listed)}


def send_email(config: NotifyConfig, digest: Digest) -> None:
    """One message over SMTP: STARTTLS or implicit TLS with the system's certificates, or plain
    (loopback only, checked by the configuration); a login when a user name is set."""
    timeout = config.timeout_seconds
    if config.smtp_security == "tls":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(config.smtp_host, config.smtp_port, timeout=timeout,
                                              context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=timeout)
    with smtp:
        if config.smtp_security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if config.smtp_username:
            smtp.login(config.smtp_username, config.smtp_password)
        smtp.send_message(digest.email(config))


def send_webhook(config: NotifyConfig, digest: Digest) -> None:
    """One JSON POST; anything but a 2xx answer is a failure (redirects are not followed)."""
    response = requests.post(config.webhook_url, json=digest.payload(), timeout=config.timeout_seconds,
                             allow_redirects=False)
    response.close()
    if not 200 <= response.status_code < 300:
        raise WebhookRefused(f"the receiver answered {response.status_code}")


class WebhookRefused(Exception):
    """The webhook's receiver answered, but not with success."""


def why_not_sent(exc: Exception, timeout: float) -> str:
    """Why a message was not sent, in words that never hold the webhook's URL (its path may be a secret)."""
    if isinstance(exc, (requests.Timeout, TimeoutError, socket.timeout)):
        return f"no answer within {timeout:.0f} s"
    if isinstance(exc, requests.RequestException):
        return "could not connect"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the mail server answered {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class Notifier(threading.Thread):
    """Gathers events and sends them as digests; does nothing (and starts no thread) unless
    `[notify]` names a mail server or a webhook. Its methods are quick and never raise."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name="notify", daemon=True)
        self.config = config.notify
        self._profile = config.profile
        self._clock = clock
        self._channels = [(name, send) for name, send, on in (("e-mail", send_email, config.notify.smtp_host),
                                                             ("webhook", send_webhook, config.notify.webhook_url))
                          if on]
        self._host, self._inbox = socket.gethostname(), str(config.inbox.path)
        self._cond = threading.Condition()
        self._events: list[Event] = []
        self._due = 0.0
        self._closing = False
        self._open: dict[str, float] = {}  # reasons already told, and when they were last seen
        logs.add_secrets([self.config.smtp_password])  # a mail server's answer never puts it in a log line
        if self._channels:
            self.start()

    def refused(self, file: str, reason: str, hint: str) -> None:
        """A file was put in error/ under the name `file` (called from the upload threads)."""
        self._add(Event(REFUSED, time.time(), f"{file}: {reason}", file=file, reason=reason, hint=hint))

    def needs_person(self, reason: str | None) -> None:
        """What the heartbeat says a person must fix now (None: nothing). A reason is told once, and
        again only after it was gone for a whole interval (a pause that ends and trips again is one)."""
        now = self._clock()
        self._open = {r: seen for r, seen in self._open.items() if now - seen <= self.config.interval_seconds}
        if reason is not None:
            if reason not in self._open:
                self._add(Event(PERSON, time.time(), reason, reason=reason))
            self._open[reason] = now

    def close(self, stopped: str | None, wait: float | None = None) -> None:
        """Send what is gathered now, with `stopped` (why the agent stopped unexpectedly) if given;
        wait at most `wait` seconds (default: as long as every channel may take)."""
        if not self._channels:
            return
        if stopped:
            self._add(Event(STOPPED, time.time(), stopped, reason=stopped))
        with self._cond:
            self._closing = True
            self._cond.notify()
        self.join(self.config.timeout_seconds * len(self._channels) + 1 if wait is None else wait)

    def _add(self, event: Event) -> None:
        if not self._channels:
            return
        with self._cond:
            if not self._events:
                self._due = self._clock() + self.config.interval_seconds
            self._events.append(event)
            self._cond.notify()

    def run(self) -> None:
        """Send each digest when it is due (or at once when closing), then wait for the next."""
        profile.enter(self._profile)
        while True:
            with self._cond:
                while not self._closing and (not self._events or self._clock() < self._due):
                    self._cond.wait(self._due - self._clock() if self._events else None)
                events, self._events, closing = self._events, [], self._closing
            if events:
                self._send(Digest(self._host, self._inbox, events, self._profile))
            if closing:
                return

    def _send(self, digest: Digest) -> None:
        for name, send in self._channels:
            try:
                send(self.config, digest)
            except Exception as exc:  # noqa: BLE001 - a notifier never stops the agent
                log.warning("notification by %s not sent (%s): the %d event(s) of this digest are only in the log "
                            "and `status`; check `[notify]` and that the receiver is reachable",
                            name, why_not_sent(exc, self.config.timeout_seconds), len(digest.events))
            else:
                log.info("notified by %s: %s", name, digest.subject())
