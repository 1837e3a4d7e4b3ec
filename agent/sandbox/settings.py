"""What a sandbox is configured with: credentials, Qonto's timings and the faults to inject.

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

    def __post_init__(self) -> None:
        """`faults=None` means no faults, as `Sandbox(faults=None)` always has."""
        if self.faults is None:
            self.faults = Faults()
