"""`qonto-agent demo`, the README's first command, as a newcomer runs it."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

from support import REPO, agent_env

from agent.samples import SAMPLES


def test_demo_runs_the_whole_flow_and_says_where_to_look(tmp_path):
    workspace = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "agent", "demo", "--dir", str(workspace)], cwd=REPO,
                            capture_output=True, text=True, timeout=30, env=agent_env())
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert str(workspace / "inbox" / "done") in out and str(workspace / "outbox") in out
    done = sorted(p.name for p in (workspace / "inbox" / "done").iterdir())
    assert done == sorted(s.file_name for s in SAMPLES)
    assert (workspace / "inbox" / "error" / "meeting-notes.pdf.error.json").exists()
    jsons = [json.loads(p.read_text()) for p in (workspace / "outbox").glob("*.json")]
    assert len(jsons) == len(SAMPLES) + 3  # the uploads and the invoices the organization already had
    linked = sorted(j["source_file"]["name"] for j in jsons if j["source_file"])
    assert linked == sorted(s.file_name for s in SAMPLES)
    rows = (workspace / "outbox" / "invoices.csv").read_text().splitlines()
    assert len(rows) == len(jsons) + 1
    # nothing left running: the sandbox's port is closed once the command returned
    port = int(re.search(r"127\.0\.0\.1:(\d+)", out).group(1))
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
