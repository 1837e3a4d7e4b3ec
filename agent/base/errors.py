"""One exception hierarchy that callers can act on.

Every message is a sentence a person can act on, and never contains a secret. An error says what
kind of trouble it is (`permanent`: trying again unchanged gives the same answer); only the
command line turns errors into exit codes.
"""

from __future__ import annotations

import errno


class AgentError(Exception):
    """Base of every error qonto-agent raises on purpose."""

    permanent = True  # the same request, sent again unchanged, fails the same way

    @property
    def retryable(self) -> bool:
        """True when trying again later, with nothing changed, may succeed."""
        return not self.permanent


class ConfigError(AgentError):
    """The configuration (file, environment, flags) or a local folder cannot be used as it is."""


class FolderError(ConfigError):
    """A folder refuses every write (read-only, full, not permitted): no single file's fault. The
    work that needs it pauses, and resumes by itself once a person has fixed the folder."""

    WIDE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})
    _WHAT_TO_DO = {
        errno.EROFS: "{folder} is on a read-only file system: make it writable",
        errno.ENOSPC: "the disk holding {folder} is full: free some space",
        errno.EDQUOT: "the disk quota for {folder} is used up: free some space or raise the quota",
    }
    _PERMISSION = "{folder} cannot be written by the user running qonto-agent: let it write there"

    @classmethod
    def of(cls, folder: str, exc: OSError) -> FolderError | None:
        """The folder-wide trouble `exc` means for `folder`, or None when it is one file's trouble."""
        if exc.errno not in cls.WIDE:
            return None
        return cls(cls._WHAT_TO_DO.get(exc.errno, cls._PERMISSION).format(folder=folder))


class QontoError(AgentError):
    """Qonto (or the network on the way to it) did not do what we asked.

    `code`, `detail` and `trace_id` come from Qonto's JSON:API error body when there is one;
    support asks for the trace id, so it is part of the message. `pointers` are its errors'
    `source.pointer`s: a whole-request refusal of a bulk upload may name the item at fault.
    """

    permanent = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
        trace_id: str | None = None,
        pointers: tuple[str, ...] = (),
    ) -> None:
        if trace_id:
            message = f"{message} (trace id {trace_id})"
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail
        self.trace_id = trace_id
        self.pointers = pointers


class TransientError(QontoError):
    """Network trouble, timeouts, 5xx or rate limits that outlasted the retries: try again later."""


class RateLimited(TransientError):
    """Qonto answered 429 after our retries; `retry_after` is in seconds when Qonto said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class KeyWindowPassed(TransientError):
    """A resend would leave after Qonto may have forgotten the idempotency key of an earlier attempt
    (a long outage, a paused process): look for the invoice that attempt may have made first."""


class NeedsPerson(QontoError):
    """Qonto refused us in a way only a person can fix (credentials, permissions, a wrong address).

    Retrying unchanged does not help, but nothing is wrong with the files: they wait.
    """

    permanent = True


class CredentialsError(NeedsPerson):
    """401: the credentials were refused. Retrying with the same ones only gets us throttled."""


class PermissionDenied(NeedsPerson):
    """403: the credentials are valid but lack a permission or OAuth scope."""


class HTMLAnswerError(NeedsPerson):
    """Something other than the Qonto API answered: an HTML page, a 404 where Qonto always has an
    endpoint, a server that does not speak TLS. A wrong base_url or a missing sandbox staging token."""


class RequestRejected(QontoError):
    """400/404/422: Qonto understood the request and refused it as a whole; retrying will not help."""

    permanent = True


class AttachmentURLExpired(QontoError):
    """The pre-signed attachment URL was refused as expired: fetch the attachment again."""


class LedgerError(AgentError):
    """The ledger file cannot be used: not a database, its folder cannot be written, or it was
    deleted or replaced under a running agent. A person must look; retrying unchanged will not help."""


class LedgerBusy(LedgerError):
    """Another process held the ledger locked longer than the busy timeout: try again later."""

    permanent = False
