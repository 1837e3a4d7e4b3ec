"""kill -9 at every step of a move into done/ or error/, on every kind of file system, then a restart:
exactly one copy is filed. And where hard links are refused, two agents filing 120 files of one name
lose and replace nothing.

A small C shim, loaded with LD_PRELOAD into a real `qonto-agent` process, stands in for the file
system and for the crash: it can make `renameat2` answer EINVAL (no RENAME_NOREPLACE) and `link`
refuse with EPERM (FAT, many SMB shares), and it can SIGKILL the process just before or just after
the Nth call of a function whose path holds a marker (the dropped file is named `crashme-….pdf`).
It also writes every such call to a trace, which tells each test the step it stopped at.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import FAST_INBOX, REPO, agent_env, make_config, pdf_bytes, run_agent, wait_for

MARK = "crashme-"

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* SHIM_MARK: a substring of the path(s) of the calls to count; SHIM_KILL: "before:renameat:2" or
   "after:linkat:1"; SHIM_TRACE: a file that gets "function<TAB>n<TAB>path<TAB>path<TAB>flags" per
   counted call; SHIM_RENAMEAT2_EINVAL, SHIM_LINK_EPERM: refuse those calls. */

static const char *names[] = {"renameat2", "renameat", "rename", "linkat", "link", "unlinkat", "unlink",
                              "open", "open64", "openat", "openat64", 0};
static int counts[16];

static void where(int dirfd, const char *path, char *out, size_t size) {
    char fdpath[64], dir[4096];
    ssize_t n = -1;
    if (path && path[0] != '/' && dirfd != AT_FDCWD) {
        snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", dirfd);
        n = readlink(fdpath, dir, sizeof dir - 1);
    }
    if (n > 0) { dir[n] = 0; snprintf(out, size, "%s/%s", dir, path); }
    else snprintf(out, size, "%s", path ? path : "");
}

/* 0: go on; 1: kill before the call; 2: kill after it */
static int step(const char *func, int fd1, const char *p1, int fd2, const char *p2, int flags) {
    const char *mark = getenv("SHIM_MARK"), *kill_at = getenv("SHIM_KILL"), *trace = getenv("SHIM_TRACE");
    char a[4200], b[4200];
    where(fd1, p1, a, sizeof a);
    where(fd2, p2, b, sizeof b);
    if (!mark || (!strstr(a, mark) && !strstr(b, mark))) return 0;
    int i = 0;
    while (names[i] && strcmp(names[i], func)) i++;
    int n = __atomic_add_fetch(&counts[i], 1, __ATOMIC_SEQ_CST);
    if (trace) {
        char line[9000];
        int len = snprintf(line, sizeof line, "%s\t%d\t%s\t%s\t%d\n", func, n, a, b, flags);
        int fd = syscall(SYS_openat, AT_FDCWD, trace, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) { syscall(SYS_write, fd, line, len); syscall(SYS_close, fd); }
    }
    if (kill_at) {
        char want[64];
        const char *colon = strchr(kill_at, ':');
        snprintf(want, sizeof want, "%s:%d", func, n);
        if (colon && !strcmp(colon + 1, want)) return strncmp(kill_at, "before:", 7) == 0 ? 1 : 2;
    }
    return 0;
}

#define REAL(name) static typeof(&name) real; if (!real) real = dlsym(RTLD_NEXT, #name)
#define AROUND(call, func, fd1, p1, fd2, p2, flags) \
    int when = step(func, fd1, p1, fd2, p2, flags); \
    if (when == 1) kill(getpid(), SIGKILL); \
    int rc = call, saved = errno; \
    if (when == 2) kill(getpid(), SIGKILL); \
    errno = saved; \
    return rc

int renameat2(int a, const char *p, int b, const char *q, unsigned int flags) {
    REAL(renameat2);
    AROUND(getenv("SHIM_RENAMEAT2_EINVAL") ? (errno = EINVAL, -1) : real(a, p, b, q, flags),
           "renameat2", a, p, b, q, (int)flags);
}
int renameat(int a, const char *p, int b, const char *q) { REAL(renameat); AROUND(real(a, p, b, q), "renameat", a, p, b, q, 0); }
int rename(const char *p, const char *q) { REAL(rename); AROUND(real(p, q), "rename", AT_FDCWD, p, AT_FDCWD, q, 0); }
int linkat(int a, const char *p, int b, const char *q, int flags) {
    REAL(linkat);
    AROUND(getenv("SHIM_LINK_EPERM") ? (errno = EPERM, -1) : real(a, p, b, q, flags), "linkat", a, p, b, q, flags);
}
int link(const char *p, const char *q) {
    REAL(link);
    AROUND(getenv("SHIM_LINK_EPERM") ? (errno = EPERM, -1) : real(p, q), "link", AT_FDCWD, p, AT_FDCWD, q, 0);
}
int unlinkat(int a, const char *p, int flags) { REAL(unlinkat); AROUND(real(a, p, flags), "unlinkat", a, p, AT_FDCWD, 0, flags); }
int unlink(const char *p) { REAL(unlink); AROUND(real(p), "unlink", AT_FDCWD, p, AT_FDCWD, 0, 0); }

/* opens are counted only when they create (O_EXCL placeholders, temporaries) */
#define MODE mode_t mode = 0; \
    if (flags & (O_CREAT | O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
#define OPENS(fd, p, call, func) if (!(flags & O_CREAT)) return call; AROUND(call, func, fd, p, AT_FDCWD, 0, flags)
int open(const char *p, int flags, ...) { MODE REAL(open); OPENS(AT_FDCWD, p, real(p, flags, mode), "open"); }
int open64(const char *p, int flags, ...) { MODE REAL(open64); OPENS(AT_FDCWD, p, real(p, flags, mode), "open64"); }
int openat(int d, const char *p, int flags, ...) { MODE REAL(openat); OPENS(d, p, real(d, p, flags, mode), "openat"); }
int openat64(int d, const char *p, int flags, ...) { MODE REAL(openat64); OPENS(d, p, real(d, p, flags, mode), "openat64"); }
"""

# What a file system offers, as the shim makes it look (the environment of the agent's process).
MODES = {
    "renameat2": {},
    "hard link": {"SHIM_RENAMEAT2_EINVAL": "1"},
    "placeholder": {"SHIM_RENAMEAT2_EINVAL": "1", "SHIM_LINK_EPERM": "1"},
}
# The calls, after the claim's `renameat`, that file a claim away, in order (Python's os.link with
# dir_fds calls linkat, os.unlink(dir_fd=) unlinkat, os.rename(dir_fds) renameat, os.open(dir_fd=)
# openat64; ctypes' renameat2 resolves to the shim's). The index is where the claim's bytes arrive.
MOVE = {
    "renameat2": (["renameat2"], 0),
    "hard link": (["renameat2", "linkat", "unlinkat"], 1),
    "placeholder": (["renameat2", "linkat", "openat64", "renameat"], 3),
}
SIDECAR = ["open64", "rename", "unlink"]  # error/ only: its temporary (O_EXCL), renamed, the unlink finding it gone


def steps(folder: str, mode: str) -> list[str]:
    return MOVE[mode][0] + (SIDECAR if folder == "error" else [])


def kill_points() -> list:
    """(folder, mode, "before"/"after", step index) for every step of every move. The placeholder
    mode (the most steps, the trickiest recovery) runs by default; the other two are `slow`."""
    return [pytest.param(folder, mode, when, i, marks=() if mode == "placeholder" else pytest.mark.slow,
                         id=f"{folder}-{mode.replace(' ', '-')}-{when}-{steps(folder, mode)[i]}{i}")
            for folder in ("done", "error") for mode in MODES
            for i in range(len(steps(folder, mode))) for when in ("before", "after")]


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build the LD_PRELOAD shim")
    folder = tmp_path_factory.mktemp("shim")
    (folder / "shim.c").write_text(SHIM)
    built = subprocess.run(["cc", "-shared", "-fPIC", "-o", str(folder / "shim.so"), str(folder / "shim.c"), "-ldl"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"the LD_PRELOAD shim does not build here: {built.stderr.strip()}")
    return folder / "shim.so"


def shim_env(shim: Path, mode: str, **extra: str) -> dict[str, str]:
    return agent_env(**{"LD_PRELOAD": str(shim), "SHIM_MARK": MARK, **MODES[mode], **extra})


def trace_of(path: Path) -> list[str]:
    """The functions the shim counted, in order, from the first move out of the claim folder on."""
    if not path.exists():
        return []
    calls = [line.split("\t")[0] for line in path.read_text().splitlines()]
    assert calls[:1] == ["renameat"], calls  # the claim
    return calls[1:]


def dropped(inbox: Path, folder: str, name: str) -> bytes:
    data = pdf_bytes(name) if folder == "done" else b"not a PDF at all, whatever its name says\n" * 20
    (inbox / name).write_bytes(data)
    return data


def visible(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def assert_no_traceback(*runs: subprocess.CompletedProcess) -> None:
    for run in runs:
        assert "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr


@pytest.mark.parametrize("folder, mode", [(f, m) for f in ("done", "error") for m in MODES])
def test_the_shim_sees_every_step_of_the_move(tmp_path, sandbox, shim, folder, mode):
    """The step lists above are what the agent really does (else the kill tests would miss steps)."""
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    dropped(tmp_path / "inbox", folder, f"{MARK}0.pdf")
    done = run_agent(config, "upload", env=shim_env(shim, mode, SHIM_TRACE=str(tmp_path / "trace")))
    out = done.stdout + done.stderr
    assert done.returncode == (0 if folder == "done" else 1), out
    assert trace_of(tmp_path / "trace") == steps(folder, mode), out
    assert_no_traceback(done)


@pytest.mark.parametrize("folder, mode, when, index", kill_points())
def test_kill_at_a_step_of_a_move_then_restart_files_exactly_one_copy(tmp_path, sandbox, shim, folder, mode, when,
                                                                      index):
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    inbox = tmp_path / "inbox"
    name = f"{MARK}{folder}.pdf"
    data = dropped(inbox, folder, name)
    calls = steps(folder, mode)
    nth = (["renameat"] + calls[:index + 1]).count(calls[index])  # the claim was the first renameat
    trace = tmp_path / "trace"
    first = run_agent(config, "upload", env=shim_env(shim, mode, SHIM_KILL=f"{when}:{calls[index]}:{nth}",
                                                     SHIM_TRACE=str(trace)))
    said = f"first run:\n{first.stdout}{first.stderr}"
    assert first.returncode == -9, said  # killed at that step, for real
    assert trace_of(trace) == calls[:index + 1], said

    second = run_agent(config, "upload")  # no shim: the file system as it is
    said += f"\nafter the restart:\n{second.stdout}{second.stderr}"
    point = 2 * index + (when == "after")  # 2i: killed before step i; 2i + 1: after it
    arrived = 2 * MOVE[mode][1] + 1  # from here on, the claim's bytes are in done/ or error/
    assert second.returncode == (1 if folder == "error" and point < arrived else 0), said  # 1: it refused a file
    assert_no_traceback(first, second)

    other = "error" if folder == "done" else "done"
    assert visible(inbox / other) == {}, said
    assert not [p for p in inbox.iterdir() if p.is_file()], said  # nothing given back or left in the inbox
    left = [p for p in (inbox / ".processing").rglob("*") if not p.is_dir() and p.suffix != ".lock"]
    assert not left, said
    filed = visible(inbox / folder)
    sidecar = f"{name}.error.json"
    assert {k: v for k, v in filed.items() if k != sidecar} == {name: data}, said  # one copy, whole: no placeholder

    if folder == "done":
        assert hidden(inbox / folder) == [], said
        invoices = sandbox.invoices()
        assert len(invoices) == 1 and sandbox.attachment_bytes(invoices[0]["attachment_id"]) == data, said
        return
    assert sandbox.invoice_count() == 0, said
    # The order is: move, then the sidecar for the name taken. A kill after the claim's bytes reached
    # error/ and before the sidecar's rename leaves the file there without its sidecar (and, killed
    # after the temporary was made, that hidden temporary): the restart finds nothing left to file.
    # The ledger still holds why, so `status` lists it under "last errors".
    placed = 2 * len(MOVE[mode][0]) + 2 * SIDECAR.index("rename") + 1  # after the sidecar's rename
    made = placed - 2  # after the temporary's O_EXCL open
    if arrived <= point < placed:
        assert sidecar not in filed, said
        temps = hidden(inbox / folder)
        assert len(temps) == (made <= point) and all(t.startswith(f".{sidecar}.tmp-") for t in temps), said
        status = run_agent(config, "status", "--json")
        assert [e["file"] for e in json.loads(status.stdout)["recent_errors"]] == [name], status.stdout
        return
    assert hidden(inbox / folder) == [], said
    card = json.loads(filed[sidecar])
    assert card["file"] == name and card["sha256"] == hashlib.sha256(data).hexdigest(), card


def test_where_hard_links_are_refused_two_agents_file_120_same_named_files_and_lose_or_replace_none(
        tmp_path, sandbox, agents, shim):
    config = make_config(tmp_path, sandbox, inbox={**FAST_INBOX, "recursive": True})
    inbox = tmp_path / "inbox"
    dropped_files = {}
    for i in range(120):  # one name, 120 contents: every filing into done/ meets the others' names
        data = pdf_bytes(f"scan {i}")
        (inbox / f"d{i:03}").mkdir()
        (inbox / f"d{i:03}" / "scan.pdf").write_bytes(data)
        dropped_files[hashlib.sha256(data).hexdigest()] = data
    started = [agents(config, "run", log_name=f"{who}.log",
                      env=shim_env(shim, "placeholder", SHIM_MARK="/done/scan", SHIM_TRACE=str(tmp_path / who)))
               for who in ("first", "second")]

    def logs() -> str:
        return "\n".join(f"--- {a.log_path.name}\n{a.log()}" for a in started)

    def stopped() -> str | None:
        return next((f"{a.log_path.name} exited {a.proc.returncode}" for a in started if a.proc.poll() is not None),
                    None)

    done = inbox / "done"
    wait_for(lambda: done.is_dir() and len(list(done.iterdir())) >= 120, timeout=60, message="120 files in done/",
             on_fail=logs, give_up=stopped)
    assert [a.stop() for a in started] == [0, 0], logs()
    filed = visible(done)
    assert set(filed) == {"scan.pdf", *(f"scan ({n}).pdf" for n in range(2, 121))}, logs()
    assert {hashlib.sha256(b).hexdigest(): b for b in filed.values()} == dropped_files, logs()  # none lost, none twice
    assert hidden(done) == [] and visible(inbox / "error") == {}, logs()
    left = [p for p in (inbox / ".processing").rglob("*") if not p.is_dir() and p.suffix != ".lock"]
    assert not left and not [p for p in inbox.rglob("scan.pdf") if done not in p.parents], logs()
    held = sorted(sandbox.attachment_bytes(inv["attachment_id"]) for inv in sandbox.invoices())
    assert held == sorted(dropped_files.values()), logs()
    traces = [tmp_path / who for who in ("first", "second")]  # an agent that filed nothing leaves none
    renames = [line for trace in traces if trace.exists() for line in trace.read_text().splitlines()
               if line.startswith("renameat\t")]
    assert len(renames) == 120, logs()  # each one placed by renaming over its own O_EXCL placeholder
    assert "Traceback" not in logs(), logs()


STOPPED_MOVE = """
import errno, os, sys
from pathlib import Path
from agent.base import beneath
from agent.inbox.filing import Filing

inbox, at = Path(sys.argv[1]), sys.argv[2]
beneath.renameat2 = lambda: None  # a file system without RENAME_NOREPLACE nor hard links


def no_link(*args, **kw):
    raise PermissionError(errno.EPERM, "no hard links here")


def stop(real, when):
    def call(*args, **kw):
        if when(*args):
            os._exit(9)
        return real(*args, **kw)
    return call


os.link = no_link
os.open = stop(os.open, lambda path, flags, *a: at == "create" and path == "x.pdf")
renames = []
os.rename = stop(os.rename, lambda *a: at == "rename" and len(renames.append(a) or renames) == 2)  # 1: the claim
filing = Filing(inbox)
filing.to_done(filing.claim(inbox / "x.pdf", 0.0))
"""


@pytest.mark.parametrize("at", ["create", "rename"])
def test_only_the_stopped_filings_own_placeholder_is_removed(tmp_path, at):
    """A filing stops before creating its placeholder (then whatever holds the name is another's)
    or before renaming over it (then the placeholder is its own); the agent adopting its claim
    removes only its own placeholder, and files the claim once."""
    from agent.inbox.filing import Filing

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "x.pdf").write_bytes(pdf_bytes("x"))
    stopped = subprocess.run([sys.executable, "-c", STOPPED_MOVE, str(inbox), at], capture_output=True, text=True,
                             cwd=REPO)
    assert stopped.returncode == 9, stopped.stderr
    live = Filing(inbox)  # an agent at work, in the middle of its own move to that name
    try:
        if at == "create":
            (inbox / "done" / "x.pdf").write_bytes(live.placeholder)
        else:
            assert (inbox / "done" / "x.pdf").read_bytes().startswith(b"qonto-agent ")
        adopter = Filing(inbox)
        try:
            assert adopter.adopt_orphans() == 1
            left = [p.read_bytes() for p in (inbox / "done").iterdir()]
            assert left == ([live.placeholder] if at == "create" else []), left
            [claim] = adopter.claims()
            filed = adopter.to_done(claim)
        finally:
            adopter.close()
    finally:
        live.close()
    assert filed.name == ("x (2).pdf" if at == "create" else "x.pdf") and filed.read_bytes() == pdf_bytes("x")
