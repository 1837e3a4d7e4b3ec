"""How a command's work ended, in words the command line turns into exit codes (and nothing else does)."""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    """The end of a pass (`upload`, `sync`, `demo`) or of `run`."""

    DONE = "done"  # everything that could be done was done
    FAILED = "failed"  # some files or invoices failed permanently (error/, or listed)
    LATER = "later"  # work is left for later: transient trouble, nothing lost
    CREDENTIALS = "credentials"  # credentials or permissions were refused: a person must act
    FOLDER = "folder"  # a folder refused every write (read-only, full): a person must fix it
