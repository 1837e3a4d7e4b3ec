"""The read-only view of what the sandbox received, over HTTP for users' own integration tests:
`GET /_sandbox/requests` (the latest records, oldest first; `?since=<seq>` for those after a
sequence number, `?limit=<n>`, default 100) and `GET /_sandbox/counts` (requests per endpoint).
No credentials needed, none shown: the log masks every secret."""

from __future__ import annotations

from agent.sandbox.answers import Request, Response, api_error, json_answer
from agent.sandbox.log import RequestLog

PREFIX = "/_sandbox/"
_DEFAULT_LIMIT = 100


def view(req: Request, log: RequestLog) -> Response:
    """The answer to a request under `/_sandbox/`."""
    name = req.path.removeprefix(PREFIX)
    if name not in ("requests", "counts"):
        detail = f"No sandbox view at {req.path}: try {PREFIX}requests or {PREFIX}counts"
        return api_error(req, 404, "not_found", detail)
    if req.method != "GET":
        return api_error(req, 405, "method_not_allowed", "The sandbox's request view is read-only: use GET")
    if name == "counts":
        counts = log.counts()
        return json_answer(200, {"counts": counts, "total": sum(counts.values())})
    since, limit = _number(req, "since", 0), _number(req, "limit", _DEFAULT_LIMIT)
    if since is None or limit is None or limit < 1:
        return api_error(req, 400, "invalid", "since must be an integer and limit one of at least 1")
    records = log.records(since)[-limit:]
    return json_answer(200, {"requests": [record.as_json() for record in records], "last_seq": log.last_seq()})


def _number(req: Request, name: str, default: int) -> int | None:
    """A query parameter as an integer (`default` when absent); None when it is not one."""
    try:
        return int(req.query.get(name, [str(default)])[-1])
    except ValueError:
        return None
