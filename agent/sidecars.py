"""Clean retries: a file moved back from error/ into the inbox, then uploaded, takes its stale
`<name>.error.json` with it.

The sidecar stays beside its file in error/ as long as the file is there. Once the file is gone
from error/ and the ledger says its content (the sidecar's `sha256`) was uploaded since, the
sidecar only misleads: it is removed. The ledger row itself became "uploaded" with the upload, so
`status` no longer lists the file under its last errors.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from agent.base.text import printable
from agent.state.ledger import Ledger, UploadOutcome

log = logging.getLogger(__name__)

SUFFIX = ".error.json"


def clear_stale(inbox: Path, ledger: Ledger) -> int:
    """Remove the sidecars in `inbox`/error/ whose file left error/ and whose content was uploaded since."""
    removed = 0
    try:
        entries = list((inbox / "error").iterdir())
    except OSError:
        return 0
    for sidecar in entries:
        if not sidecar.name.endswith(SUFFIX) or sidecar.name.startswith("."):
            continue
        if sidecar.with_name(sidecar.name[:-len(SUFFIX)]).exists() or sidecar.is_symlink():
            continue  # the file is still in error/: its sidecar says why
        try:
            sha = json.loads(sidecar.read_text(encoding="utf-8")).get("sha256")
        except (OSError, ValueError, AttributeError):
            continue
        upload = ledger.lookup(sha) if isinstance(sha, str) else None
        if upload is None or upload.outcome != UploadOutcome.UPLOADED:
            continue
        try:
            sidecar.unlink()
        except OSError:
            continue
        removed += 1
        log.info("removed %s: its file was moved back to the inbox and uploaded since",
                 printable(f"error/{sidecar.name}"))
    return removed
