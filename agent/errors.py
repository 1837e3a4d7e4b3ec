"""One exception hierarchy that callers can act on.

Every message is a sentence a person can act on, and never contains a secret. Each class carries
the process exit code of DESIGN.md so the command line maps errors to exit codes in one place.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # some files or invoices failed permanently
EXIT_USAGE = 2  # usage or configuration error
EXIT_RETRY_LATER = 3  # transient trouble: nothing lost, run again later
EXIT_CREDENTIALS = 4  # credentials refused


class AgentError(Exception):
    """Base of every error qonto-agent raises on purpose."""

    exit_code = EXIT_FAILED


class ConfigError(AgentError):
    """The configuration (file, environment, flags) cannot be used as it is."""

    exit_code = EXIT_USAGE


class QontoError(AgentError):
    """Qonto (or the network on the way to it) did not do what we asked.

    `code`, `detail` and `trace_id` come from Qonto's JSON:API error body when there is one;
    support asks for the trace id, so it is part of the message.
    """

    exit_code = EXIT_RETRY_LATER

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
        trace_id: str | None = None,
    ) -> None:
        if trace_id:
            message = f"{message} (trace id {trace_id})"
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail
        self.trace_id = trace_id


class TransientError(QontoError):
    """Network trouble, timeouts, 5xx or rate limits that outlasted the retries: try again later."""


class RateLimited(TransientError):
    """Qonto answered 429 after our retries; `retry_after` is in seconds when Qonto said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class CredentialsError(QontoError):
    """401: the credentials were refused. Retrying with the same ones only gets us throttled."""

    exit_code = EXIT_CREDENTIALS


class PermissionDenied(QontoError):
    """403: the credentials are valid but lack a permission or OAuth scope."""

    exit_code = EXIT_CREDENTIALS


class HTMLAnswerError(QontoError):
    """The API answered with an HTML page: a wrong base_url or a missing sandbox staging token."""

    exit_code = EXIT_USAGE


class RequestRejected(QontoError):
    """400/404/422: Qonto understood the request and refused it as a whole; retrying will not help."""

    exit_code = EXIT_FAILED


class AttachmentURLExpired(QontoError):
    """The pre-signed attachment URL was refused as expired: fetch the attachment again."""
