"""What the inbox tells a person about a file it will not send, in words an office worker understands.

Two kinds: a `Refusal` sends the file to error/ with a sidecar (it can never go as it is); an
unaccepted file is left where it is and listed by `status` (a link, another type, a subfolder).
Each text says what a person can do that changes the outcome.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from agent.inbox.content import State
from agent.qonto.limits import MAX_FILE_BYTES

READ_ACCESS = "Make the file readable by the user running qonto-agent, then move it back into the inbox."


@dataclass(frozen=True)
class Refusal:
    """Why a file went to error/: a code for programs, a detail and a hint for people."""

    code: str
    detail: str
    hint: str


def refusal(state: State, size: int) -> Refusal:
    """The refusal for a file judged `state` (anything but complete or still being written)."""
    if state is State.EMPTY:
        return Refusal("empty", "the file is empty (0 bytes), and stayed so",
                       "The copy or scan did not finish: save the invoice again into the inbox.")
    if state is State.TOO_LARGE:
        return Refusal("too_large", f"the file is {size / 1e6:.1f} MB; Qonto accepts at most "
                       f"{MAX_FILE_BYTES / 1e6:.0f} MB per invoice",
                       "Compress the PDF or scan at a lower resolution, then drop it into the inbox again.")
    if state is State.NOT_SUPPORTED:
        return Refusal("not_supported", "the file is not a PDF, JPEG or PNG, whatever its name says",
                       "Open it and save or print it as a PDF, then drop that PDF into the inbox.")
    raise ValueError(f"no refusal for {state}")


def incomplete(seconds: float) -> Refusal:
    waited = f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.0f} seconds"
    return Refusal("incomplete", f"the file still looked unfinished after {waited} (cut off, "
                   "or a scan or copy that never completed)",
                   "Open it: if pages are missing, scan or download it again; if it looks whole, print it "
                   "to a new PDF (\"Print to PDF\") and drop that into the inbox.")


def misnamed(name: str, kind: object) -> Refusal:
    what = {"pdf": "a PDF", "jpeg": "a JPEG image", "png": "a PNG image"}.get(str(kind), "another kind of file")
    return Refusal("misnamed", f"the file is named {name!r} but it is {what}",
                   "Give it the ending that matches its content (.pdf, .jpg or .png), then drop it into the "
                   "inbox again.")


def unreadable(why: str) -> Refusal:
    return Refusal("unreadable", f"the file could not be read ({why})", READ_ACCESS)


class Unaccepted(enum.StrEnum):
    """Why a file is left where it is (listed by `status`, logged once)."""

    LINK = "link"
    HARD_LINK = "hard_link"
    NOT_A_FILE = "not_a_file"
    OTHER_TYPE = "other_type"
    SUBFOLDER = "subfolder"
    UNREADABLE = "unreadable_folder"

    @property
    def text(self) -> str:
        return _UNACCEPTED[self]


_UNACCEPTED = {
    Unaccepted.LINK: "it is a link (shortcut) to another place, which is never followed: copy the file "
                     "itself into the inbox",
    Unaccepted.HARD_LINK: "it is a hard link, so the same file also lives outside the inbox: copy it "
                          "(a copy, not a link) into the inbox",
    Unaccepted.NOT_A_FILE: "it is not an ordinary file (a device or a pipe): copy the invoice itself into "
                           "the inbox",
    Unaccepted.OTHER_TYPE: "only PDF, JPEG and PNG files are sent (`[inbox] patterns`): save it as a PDF, "
                           "or add its pattern if Qonto takes it",
    Unaccepted.UNREADABLE: "this folder cannot be read by the user running qonto-agent: give that user read "
                           "access to it",
    Unaccepted.SUBFOLDER: "it is in a subfolder, and subfolders are not watched: move it up into the inbox, "
                          "or set `[inbox] recursive = true`",
}

SETTLING = "settling: waiting until the file stops changing"
WRITER_OPEN = "a program is still writing it: waiting until it closes the file"
UNFINISHED = "it looks unfinished (a scan or copy still in progress): waiting for the rest"
