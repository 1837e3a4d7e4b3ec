"""HTTP answers read as Qonto meant them: their JSON, their error details, refused downloads."""

from __future__ import annotations

import re
from typing import Any, Callable

import requests

from agent.base.errors import AttachmentURLExpired, HTMLAnswerError, RequestRejected, TransientError

_EXPIRED_LINK = re.compile(rb"expire|accessdenied|access denied", re.IGNORECASE)


def json_object(response: requests.Response) -> dict | None:
    """The answer's body when it is a JSON object, else None: anything else is not the API speaking."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def is_html(response: requests.Response) -> bool:
    """Whether the answer is a web page, which says a proxy or a wrong URL answered instead of Qonto."""
    return response.headers.get("Content-Type", "").lower().startswith("text/html")


def check_download(response: requests.Response) -> None:
    """Map a refused download: expired link (refetch it), transient trouble, or a plain refusal."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in (400, 403) and _EXPIRED_LINK.search(next(response.iter_content(8192), b"")):
        raise AttachmentURLExpired(f"the attachment link was refused as expired ({status}): "
                                   "fetch the attachment again for a fresh link", status=status)
    if status == 429 or status >= 500:
        raise TransientError(f"the attachment storage could not answer ({status}): it will be tried again later",
                             status=status)
    raise RequestRejected(f"the attachment download was refused ({status})", status=status)


def attachment_link(attachment: dict) -> str:
    """The attachment's download link; a missing one is handled like an expired one."""
    url = attachment.get("url")
    if not url:
        raise AttachmentURLExpired("the attachment has no download link: fetch it again for a fresh one")
    return url


def error_info(response: requests.Response, body: dict | None, redact: Callable[[Any], str | None]) -> dict[str, Any]:
    """Status, Qonto's first error code and words, every error's pointer, and the trace id, for a QontoError.

    JSON:API bodies (`errors`) for the API; OAuth bodies (`error`, `error_description`) for the
    token endpoint. Each text passes through `redact`, because it may be shown.
    """
    body = body or {}
    listed = body.get("errors")
    errors = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
    first = errors[0] if errors else {}
    return {
        "status": response.status_code,
        "code": redact(first.get("code") or body.get("error")),
        "detail": redact(error_words(first) or body.get("error_description")),
        "trace_id": redact(body.get("trace_id") or response.headers.get("X-Tyk-Trace-Id")),
        "pointers": tuple(redact(p) or "" for error in errors for p in pointers(error)),
    }


def pointers(error: dict) -> list[str]:
    """An error's `source.pointer`s: Qonto documents `source` both as an object and as a list of them."""
    source = error.get("source")
    sources = source if isinstance(source, list) else [source]
    return [s["pointer"] for s in sources if isinstance(s, dict) and isinstance(s.get("pointer"), str)]


def error_words(error: dict) -> str | None:
    """An error's message: `detail`, or `details` as one of Qonto's published examples has it
    (text or a list of texts), else `title`."""
    for key in ("detail", "details", "title"):
        value = error.get(key)
        if isinstance(value, list):
            value = "; ".join(str(v) for v in value if v)
        if value:
            return str(value)
    return None


def not_the_api(root: str, setting: str, what: str, *, staging_hint: bool = True, **info: Any) -> HTMLAnswerError:
    """The error for an answer that did not come from the Qonto API, naming the setting to check."""
    hint = "; for the Qonto sandbox, set `[qonto] staging_token` (or QONTO_STAGING_TOKEN)" if staging_hint else ""
    return HTMLAnswerError(
        f"the server at {root} answered with {what} instead of the Qonto API: check `[qonto] {setting}`{hint}", **info)
