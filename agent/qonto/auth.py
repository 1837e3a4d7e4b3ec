"""Authentication: Qonto's headers added per request, and OAuth tokens kept fresh and saved.

A rotated refresh token is saved at once, because the previous one stops working 60 s later. Where
it is saved is the caller's `TokenStore` (the file one lives in `agent/state/tokens.py`): this
package writes no files.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Protocol

import requests
from requests.auth import AuthBase

from agent.base import profile
from agent.config import QontoConfig

log = logging.getLogger("agent.qonto")

REFRESH_MARGIN = 300.0  # refresh an OAuth access token when less than this many seconds remain
REFRESH_COOLDOWN = 60.0  # after a 401, refresh again only if the last refresh is older than this
DEFAULT_TOKEN_LIFETIME = 3600.0  # Qonto's documented `expires_in`, used when an answer omits it


class TokenStore(Protocol):
    """Where rotated OAuth tokens are kept between starts; shown by `str()` in messages."""

    def load(self) -> dict | None:
        """The saved tokens, None when none were saved; raises OSError or ValueError when unreadable."""

    def save(self, tokens: dict) -> None:
        """Keep `tokens` (access_token, refresh_token, expires_at, configured); raises OSError."""


class QontoAuth(AuthBase):
    """Adds Qonto's headers per request (never session-wide), so pre-signed downloads never get them."""

    def __init__(self, authorization: Callable[[], str] | None, staging_token: str) -> None:
        self._authorization = authorization
        self._staging_token = staging_token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._authorization:
            request.headers["Authorization"] = self._authorization()
        if self._staging_token:
            request.headers["X-Qonto-Staging-Token"] = self._staging_token
        return request


class NoAuth(AuthBase):
    """Explicitly no Authorization, which also keeps requests from adding one from ~/.netrc."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


class OAuthTokens:
    """OAuth tokens, refreshed before they expire; each rotated refresh token is saved at once,
    because the previous one stops working 60 s later."""

    def __init__(self, config: QontoConfig, store: TokenStore | None, request_token: Callable[[str], dict]) -> None:
        self._can_refresh = bool(config.client_id and config.client_secret)
        self._store = store
        self._request_token = request_token
        self._lock = threading.Lock()
        self._last_refresh: float | None = None
        self._configured = config.refresh_token
        self.access_token, self.refresh_token, self.expires_at = load_tokens(config, store)

    def header(self) -> str:
        """The Authorization value for the current access token, read per request as it rotates."""
        return f"Bearer {self.access_token}"

    def secrets(self) -> list[str]:
        """The current tokens, to be masked in any text that may be shown."""
        return [t for t in (self.access_token, self.refresh_token) if t]

    def ensure_fresh(self) -> None:
        """Refresh when the token is missing, of unknown age, or has less than 5 minutes left."""
        if self._stale():
            with self._lock:
                if self._stale():
                    self._refresh()

    def recover(self, used_header: str) -> bool:
        """After a 401: True when a retry may help, because the token changed or was just refreshed."""
        with self._lock:
            if used_header != self.header():
                return True  # another thread refreshed meanwhile
            recent = self._last_refresh is not None and time.monotonic() - self._last_refresh < REFRESH_COOLDOWN
            if recent or not self._refreshable:
                return False
            self._refresh()
            return True

    @property
    def _refreshable(self) -> bool:
        return self._can_refresh and bool(self.refresh_token)

    def _stale(self) -> bool:
        if not self._refreshable:
            return False
        return not self.access_token or self.expires_at is None or self.expires_at - time.time() < REFRESH_MARGIN

    def _refresh(self) -> None:
        answer = self._request_token(self.refresh_token)
        self.access_token = answer["access_token"]
        self.refresh_token = answer.get("refresh_token") or self.refresh_token
        self.expires_at = time.time() + float(answer.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        self._last_refresh = time.monotonic()
        log.info("refreshed the OAuth access token; it is valid until %s",
                 datetime.fromtimestamp(self.expires_at, timezone.utc).isoformat(timespec="seconds"))
        if self._store is not None:
            self._save()

    def _save(self) -> None:
        tokens = {"access_token": self.access_token, "refresh_token": self.refresh_token,
                  "expires_at": self.expires_at, "configured": token_tag(self._configured)}
        try:
            self._store.save(tokens)
        except OSError as exc:
            log.error("could not save the rotated OAuth tokens to %s (%s): after a restart the agent "
                      "will need new tokens; check that folder's permissions and free space",
                      self._store, exc.strerror or type(exc).__name__)


def load_tokens(config: QontoConfig, store: TokenStore | None) -> tuple[str, str, float | None]:
    """The token store's tokens when there is one (they are newer), else the configured ones.

    A store grown from another configured refresh token is stale: the user authorized again and
    put new tokens in the configuration, so those win.
    """
    if store is not None:
        try:
            saved = store.load()
            if saved is None:
                return config.access_token, config.refresh_token, None
            if saved.get("configured", token_tag(config.refresh_token)) != token_tag(config.refresh_token):
                log.info("the configured OAuth tokens changed since %s was written: using them", store)
                return config.access_token, config.refresh_token, None
            expires_at = saved.get("expires_at")
            return (str(saved.get("access_token") or ""),
                    str(saved.get("refresh_token") or config.refresh_token),
                    float(expires_at) if isinstance(expires_at, (int, float)) else None)
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("cannot read the OAuth token store %s (%s): using the configured tokens",
                        store, type(exc).__name__)
    return config.access_token, config.refresh_token, None


def token_tag(token: str) -> str:
    """A one-way tag of a token, to recognise it later without storing it twice."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def refresh_refused_hint(status: int) -> str:
    """What to check when the token endpoint refuses the refresh token: the message a user acts on."""
    return (f"the OAuth refresh token was refused ({status}): check "
            f"{profile.settings_words(('refresh_token', 'client_id', 'client_secret'))}, or authorize the agent again")


def api_refused_hint(oauth: bool) -> str:
    """What to check when the API refuses the credentials (401), in the words of the configuration
    (of the profile this thread works for)."""
    if oauth:
        return (f"the OAuth access token was refused (401): check "
                f"{profile.settings_words(('access_token', 'refresh_token'))}, or authorize the agent again")
    return f"the secret key was refused (401): check {profile.settings_words(('login', 'secret_key'))}"
