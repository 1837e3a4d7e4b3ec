"""Test support shared by the tests and the benchmarks: config files, the agent as a real process,
waiting on conditions, sample PDFs, files in folders, the outbox checked against the sandbox, the
sandbox's API spoken by hand. Public names only; it imports nothing from pytest, and no test module
imports another."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import unicodedata
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import quote

import requests
import tomli_w

from agent.config import parse_timestamp
from agent.samples import page_pdf

if TYPE_CHECKING:
    from agent.sandbox.server import Sandbox

REPO = Path(__file__).resolve().parent.parent
LOGIN = "sandbox-org"
SECRET = "sandbox-secret-key"
# The `[inbox]` timings of `make_config` and `write_profiles_config`: end-to-end tests stay quick.
TEST_INBOX = {"settle_seconds": 0.5, "debounce_seconds": 0.3, "max_wait_seconds": 3, "poll_interval_seconds": 0.5}


# `status` answered: healthy, `run` expected but not alive, a person needed. Only for `status_of`,
# which tests poll while that changes (a pause coming and going, a file reaching error/); a test
# that knows the state asserts the one exit code.
STATUS_SHOWN = (0, 5, 6)


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
             message: str = "condition", on_fail: Callable[[], str] | None = None,
             give_up: Callable[[], str | None] | None = None) -> Any:
    """Poll `condition` until it returns something truthy; raise TimeoutError with context after
    `timeout`, or RuntimeError as soon as `give_up()` says why waiting is pointless."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if give_up is not None and (why := give_up()):
            raise RuntimeError(f"{why} while waiting for {message}\n{on_fail() if on_fail else ''}")
        if time.monotonic() > deadline:
            extra = on_fail() if on_fail else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {message}\n{extra}")
        time.sleep(interval)


def status_of(config: Path) -> dict:
    """`status --json` as data, whichever of its exit codes the moment calls for (`STATUS_SHOWN`)."""
    done = run_agent(config, "status", "--json")
    assert done.returncode in STATUS_SHOWN and "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def sidecar_of(error_folder: Path, name: str, timeout: float = 10.0) -> dict:
    """A refused file's `.error.json`, waited for: the agent moves the file first, then writes the
    sidecar for the name it took (atomically, so once it exists it is whole)."""
    path = error_folder / f"{name}.error.json"
    return wait_for(lambda: path.exists() and json.loads(path.read_text(encoding="utf-8")), timeout,
                    message=path.name)


def pdf_bytes(label: str, size: int = 0) -> bytes:
    """A small valid PDF whose bytes differ by `label`, padded (inside a comment) to `size`."""
    base = page_pdf([(72, 720, 12, label)])
    if size <= len(base):
        return base
    return page_pdf([(72, 720, 12, label)], b"%" + b"x" * (size - len(base) - 2) + b"\n")


def write_pdf(path: Path, label: str | None = None, size: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pdf_bytes(label or path.name, size))
    return path


def write_config(root: Path, base_url: str, **sections: dict[str, Any]) -> Path:
    """`root/config.toml` pointing at `base_url`, inbox/outbox/state and the rate budget's file under
    `root`, native events, the outbox sync hourly (out of the way unless wanted); `sections` override any key."""
    doc: dict[str, dict[str, Any]] = {
        "qonto": {"base_url": base_url, "login": LOGIN, "secret_key": SECRET,
                  "rate_limit_file": "state/rate-limit.sqlite"},  # not the host's: tests run side by side
        "inbox": {"path": "inbox", "polling": False},
        "outbox": {"path": "outbox", "sync_interval_seconds": 3600},
        "state": {"path": "state/ledger.sqlite"},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.toml"
    path.write_text(tomli_w.dumps(doc))
    path.chmod(0o600)
    (root / "inbox").mkdir(exist_ok=True)  # the default inbox; a test of a missing one names another
    return path


def make_config(tmp_path: Path, sandbox: Any, **sections: dict[str, Any]) -> Path:
    """A config.toml pointing at `sandbox` (anything with a `base_url`), with fast test timings; `sections` override keys."""
    fast: dict[str, dict[str, Any]] = {"qonto": {"timeout_seconds": 10}, "inbox": dict(TEST_INBOX)}
    for name, values in sections.items():
        fast.setdefault(name, {}).update(values)
    return write_config(tmp_path, sandbox.base_url, **fast)


def write_profiles_config(root: Path, base_url: str, organizations: dict[str, tuple[str, str]],
                          **sections: dict[str, Any]) -> Path:
    """`root/config.toml` with one profile per organization (`name: (login, secret)`), each with its
    own `root/<name>/inbox`, `root/<name>/outbox` and ledger `root/state/<name>.sqlite`; the shared
    sections have fast test timings, native events and an hourly sync; `sections` override them."""
    doc: dict[str, Any] = {
        "qonto": {"base_url": base_url, "timeout_seconds": 10, "rate_limit_file": "state/rate-limit.sqlite"},
        "inbox": {"polling": False, **TEST_INBOX},
        "outbox": {"sync_interval_seconds": 3600},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    doc["profiles"] = {
        name: {"qonto": {"login": login, "secret_key": secret}, "inbox": {"path": f"{name}/inbox"},
               "outbox": {"path": f"{name}/outbox"}, "state": {"path": f"state/{name}.sqlite"}}
        for name, (login, secret) in organizations.items()}
    for name in organizations:
        (root / name / "inbox").mkdir(parents=True, exist_ok=True)
    path = root / "config.toml"
    path.write_text(tomli_w.dumps(doc))
    path.chmod(0o600)
    return path


def agent_env(**extra: str) -> dict[str, str]:
    """This environment without any QONTO_* variable, unbuffered, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QONTO_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def agent_command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "agent", "-c", str(config), *args]


def run_agent(config: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess:
    """Run one `qonto-agent` command to completion as a real process."""
    return subprocess.run(agent_command(config, *args), capture_output=True, text=True, timeout=timeout,
                          env=env or agent_env(), cwd=REPO)


class AgentProcess:
    """A long-running `qonto-agent` process whose log goes to a file a failing test can print."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None, log_name: str = "agent.log",
                 verbose: bool = True):
        self.log_path = config.parent / log_name
        self._log = self.log_path.open("ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(agent_command(config, *(["-v"] if verbose else []), *args),
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env or agent_env(), cwd=REPO)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log().splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9, for real."""
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()


# --- files in folders ---------------------------------------------------------------------------

FAST_INBOX = {"settle_seconds": 0.3, "debounce_seconds": 0.3}  # `[inbox]` settling quicker than make_config's


def files_in(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def fill(folder: Path, leave: int) -> Path:
    """A filler file taking all but about `leave` bytes of the file system holding `folder`."""
    st = os.statvfs(folder)
    filler = folder / ".filler"
    with filler.open("wb") as out:
        out.truncate(0)
        remaining = st.f_bavail * st.f_frsize - leave
        while remaining > 0:
            remaining -= out.write(b"\0" * min(remaining, 1 << 20))
    return filler


# --- the outbox checked against the sandbox -------------------------------------------------------

WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_safe_name(name: str) -> None:
    """A file name an outbox may contain: plain, visible, portable, short."""
    assert name and name == Path(name).name and "/" not in name and "\\" not in name, name
    assert ".." not in name and not name.startswith("."), name
    assert not any(unicodedata.category(ch).startswith("C") for ch in name), repr(name)
    assert name.split(".")[0].upper() not in WINDOWS_RESERVED, name
    assert not name.endswith((".", " ")), name


def read_csv(outbox: Path) -> list[dict[str, str]]:
    with open(outbox / "invoices.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_outbox_complete(outbox: Path, sandbox: Sandbox) -> dict[str, dict]:
    """Every invoice of the sandbox mirrored exactly, and nothing else; returns JSONs by invoice id."""
    invoices = {invoice["id"]: invoice for invoice in sandbox.invoices()}
    names = set(os.listdir(outbox))
    docs: dict[str, dict] = {}
    expected = {"invoices.csv"}
    for name in (n for n in names if n.endswith(".json")):
        doc = json.loads((outbox / name).read_text(encoding="utf-8"))
        invoice_id = doc["supplier_invoice"]["id"]
        assert invoice_id not in docs, f"two JSONs for {invoice_id}"
        docs[invoice_id] = doc
        expected.add(name)
        stem = name.removesuffix(".json")
        assert invoice_id in stem and len(stem.encode()) <= 150
        assert_safe_name(name)
        assert doc["supplier_invoice"] == invoices.get(invoice_id), f"{name} differs from the API"
        assert doc["synced_at"].endswith("Z")
        attachment_id = invoices[invoice_id]["attachment_id"]
        if attachment_id:
            assert doc["file"] == f"{stem}.pdf"
            assert doc["attachment"]["id"] == attachment_id
            assert "url" not in json.dumps(doc["attachment"])
            assert doc["attachment"]["sha256"] == sandbox.attachment_sha256(attachment_id)
            assert sha256(outbox / doc["file"]) == sandbox.attachment_sha256(attachment_id), doc["file"]
            expected.add(doc["file"])
        else:
            assert doc["file"] is None and doc["attachment"] is None
    assert set(docs) == set(invoices)
    assert names == expected, f"unexpected files: {sorted(names - expected)[:5]}, missing: {sorted(expected - names)[:5]}"
    rows = read_csv(outbox)
    assert len(rows) == len(invoices) and {row["id"] for row in rows} == set(invoices)
    for row in rows:
        invoice, doc = invoices[row["id"]], docs[row["id"]]
        assert (row["status"], row["updated_at"], row["file"]) == (invoice["status"], invoice["updated_at"],
                                                                   doc["file"] or "")
        assert row["total_amount"] == ((invoice["total_amount"] or {}).get("value") or "")
    return docs


def settle(sandbox: Sandbox) -> None:
    """Wait until our clock has passed every `updated_at` the sandbox gave out.

    A burst of updates gets timestamps a few milliseconds ahead of the wall clock (each one
    strictly later than the last), and a window ends at our `now`: such invoices would only be
    picked up by the next sync's overlap, which is right, but not what a test of one sync wants.
    """
    latest = max(parse_timestamp(i["updated_at"], "updated_at") for i in sandbox.invoices())
    wait_for(lambda: datetime.now(timezone.utc) > latest, timeout=5, message="the sandbox clock")


def storage_downloads(sandbox: Sandbox) -> dict[str, int]:
    """Successful pre-signed downloads per attachment id."""
    counts: dict[str, int] = {}
    for record in sandbox.request_log():
        if record.path.startswith("/_storage/") and record.status == 200:
            attachment_id = record.path.rsplit("/", 1)[1]
            counts[attachment_id] = counts.get(attachment_id, 0) + 1
    return counts


# --- the sandbox's API spoken by hand --------------------------------------------------------------

API_KEY = {"Authorization": f"{LOGIN}:{SECRET}"}
Part = tuple[str, "str | tuple[str, bytes]"]  # (name, text) or (name, (filename, data))


def multipart(parts: list[Part], *, rfc2231: bool = False) -> tuple[bytes, str]:
    """A multipart/form-data body with the parts in exactly the given order; (body, content type).

    File names go raw UTF-8 in `filename="..."` (what browsers and urllib3 send), or as RFC 2231
    `filename*=UTF-8''...` with `rfc2231=True`.
    """
    boundary = uuid.uuid4().hex
    chunks = []
    for name, value in parts:
        if isinstance(value, str):
            head = f'Content-Disposition: form-data; name="{name}"\r\n\r\n'
            data = value.encode()
        else:
            filename, data = value
            param = f"filename*=UTF-8''{quote(filename)}" if rfc2231 else f'filename="{filename}"'
            head = f'Content-Disposition: form-data; name="{name}"; {param}\r\nContent-Type: application/pdf\r\n\r\n'
        chunks.append(f"--{boundary}\r\n".encode() + head.encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def item(key: str | None, filename: str, data: bytes | None = None) -> list[Part]:
    """One invoice's fields, key first, as a careful client sends them."""
    parts: list[Part] = [] if key is None else [("supplier_invoices[][idempotency_key]", key)]
    return parts + [("supplier_invoices[][file]", (filename, data if data is not None else pdf_bytes(filename)))]


def post_bulk(sb: Sandbox, parts: list[Part], session: Any = requests, **kw: Any) -> requests.Response:
    body, content_type = multipart(parts, **kw)
    return session.post(
        f"{sb.base_url}/v2/supplier_invoices/bulk", data=body, headers={**API_KEY, "Content-Type": content_type}
    )


def upload(sb: Sandbox, *pairs: tuple[str, str]) -> dict[str, Any]:
    """Upload (key, filename) pairs correctly ordered; return the JSON answer."""
    answer = post_bulk(sb, [part for key, name in pairs for part in item(key, name)])
    assert answer.status_code == 200, answer.text
    return answer.json()


def api_get(sb: Sandbox, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{sb.base_url}{path}", params=params, headers=API_KEY)


def list_all(sb: Sandbox, **params: Any) -> list[dict[str, Any]]:
    """Every invoice the list endpoint gives for `params`, following next_page."""
    found, page = [], 1
    while page is not None:
        answer = api_get(sb, "/v2/supplier_invoices", page=page, **params)
        assert answer.status_code == 200, answer.text
        found += answer.json()["supplier_invoices"]
        page = answer.json()["meta"]["next_page"]
    return found


def download_url(sb: Sandbox, attachment_id: str) -> str:
    answer = api_get(sb, f"/v2/attachments/{attachment_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["attachment"]["url"]


class FakeClock:
    """A clock that only moves when the code under test sleeps; records every sleep."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def most_in_any_window(times: list[float], window: float) -> int:
    """The most requests sent within any `window` seconds (a sliding window, as Qonto counts)."""
    times = sorted(times)
    start, most = 0, 0
    for end, at in enumerate(times):
        while times[start] + window <= at:
            start += 1
        most = max(most, end - start + 1)
    return most
