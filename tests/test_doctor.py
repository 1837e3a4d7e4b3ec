"""Operations a person relies on: `check` as a doctor, `init` whole or not at all, file names that
cannot forge log lines, clean retries from error/, interrupts. Real processes, the real sandbox."""

from __future__ import annotations

import os
import re

from support import make_config, run_agent, wait_for, write_pdf

FORGED = "x.pdf\n2026-12-04 12:00:00 ERROR fake"


def _no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


# --- init -----------------------------------------------------------------------------------------

def test_init_into_a_folder_it_cannot_write_exits_2_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    config = blocker / "sub" / "config.toml"
    result = run_agent(config, "init", "--no-input")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot write" in result.stderr and "choose a folder you can write to" in result.stderr
    _no_traceback(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_init_whose_inbox_cannot_be_made_leaves_no_configuration(tmp_path):
    (tmp_path / "blocker").write_text("")
    config = tmp_path / "config.toml"
    result = run_agent(config, "init", "--no-input", "--inbox", str(tmp_path / "blocker" / "inbox"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot create the folder" in result.stderr
    _no_traceback(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


# --- names ----------------------------------------------------------------------------------------

def test_a_name_with_a_newline_is_one_escaped_log_line_and_one_status_line(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    write_pdf(tmp_path / "inbox" / FORGED, label="forged")
    result = run_agent(config, "upload")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not any(line.startswith("2026-12-04 12:00:00 ERROR fake") for line in lines), result.stderr
    naming = [line for line in lines if "x.pdf" in line]
    assert naming and all("x.pdf\\n2026-12-04 12:00:00 ERROR fake" in line for line in naming), result.stderr
    status = run_agent(config, "status")
    assert status.returncode == 0, status.stderr
    assert not any(line.startswith("2026-12-04 12:00:00 ERROR fake") for line in status.stdout.splitlines())
    assert "x.pdf\\n2026-12-04 12:00:00 ERROR fake" in status.stdout, status.stdout
