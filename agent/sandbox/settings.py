"""What a sandbox is configured with: credentials, Qonto's timings and limits, the faults to inject.

`Sandbox` keeps one `SandboxSettings` and reads it at each use, so tests may change a field
(`sandbox.url_ttl_seconds = 1.0`, `sandbox.faults = Faults(...)`) while it serves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.qonto.limits import KEY_WINDOW_SECONDS, MAX_ITEMS, MAX_REQUEST_BYTES, URL_TTL_SECONDS
from agent.sandbox.faults import Faults


@dataclass
class SandboxSettings:
    """A sandbox's configuration; see `Sandbox` for what each knob does."""

    login: str = "sandbox-org"
    secret_key: str = "sandbox-secret-key"
    access_tokens: Iterable[str] = ("sandbox-access-token",)
    client_id: str = "sandbox-client"
    client_secret: str = "sandbox-client-secret"
    refresh_token: str = "sandbox-refresh-token"  # the first one; refreshes rotate it
    token_ttl_seconds: float = 3600
    staging_token: str | None = None
    key_window_seconds: float = KEY_WINDOW_SECONDS
    analysis_delay_seconds: float = 2.0
    url_ttl_seconds: float = URL_TTL_SECONDS
    sortable_updated_at: bool = True
    keep_files: bool = True
    faults: Faults = field(default_factory=Faults)
    seed: int | None = None
    reject: Callable[[str, bytes], str | None] | None = None
    html_mode: bool = False
    denied_scopes: Iterable[str] = ()  # OAuth scopes the credentials lack: their endpoints answer 403
    request_log_limit: int | None = None  # keep only the latest N request records (read at start)
    max_items: int = MAX_ITEMS  # Qonto's limits on a bulk request; lower them to see a client split batches
    max_request_bytes: int = MAX_REQUEST_BYTES
    too_large_413: bool = False  # over 15 MB: 413, as a proxy in front of Qonto may answer (else Qonto's 400)
    error_source_list: bool = False  # bulk errors' `source` as a list of objects, as Qonto's 2025 examples
    error_details: bool = False  # bulk errors' message in `details`, as one of Qonto's 2025 examples
    organizations: tuple[tuple[str, str], ...] = ()  # (login, secret_key) of organizations besides the primary
    ip_rate_limits: tuple[tuple[int, float], ...] = ()  # (requests, seconds): at most that many per client IP

    def __post_init__(self) -> None:
        """`faults=None` means no faults, as `Sandbox(faults=None)` always has; organizations are
        checked here, so a mistake shows at construction rather than as a 401 later."""
        if self.faults is None:
            self.faults = Faults()
        self.organizations = tuple((login, secret_key) for login, secret_key in self.organizations)
        check_organizations(self.login, self.organizations)


def check_organizations(primary: str, organizations: tuple[tuple[str, str], ...]) -> None:
    """ValueError (a sentence) unless every `<login>:<secret_key>` is an API key that names its
    login (a login without `:`, neither empty) and no two organizations share a login."""
    seen = {primary}
    for login, secret_key in organizations:
        if not login or not secret_key or ":" in login:
            raise ValueError(f"An organization needs a login without ':' and a secret key; got login {login!r}.")
        if login in seen:
            raise ValueError(f"The sandbox already serves an organization {login!r}; choose another login.")
        seen.add(login)
