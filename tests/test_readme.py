"""The README answers for the product: every message a person can see is in its troubleshooting
table, and its commands are the ones CI runs."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
ERROR_TYPES = {"ConfigError", "CredentialsError", "PermissionDenied", "HTMLAnswerError", "RequestRejected",
               "TransientError", "RateLimited", "AttachmentURLExpired", "QontoError", "Refused", "LedgerError", "LedgerBusy"}
MIN_FRAGMENT = 12  # shorter literal pieces ("unknown key `[") say too little to look up


def _pieces(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.split(r"%[sdr]|%\.\d+f", node.value)
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant)]
    if isinstance(node, ast.BinOp):
        return _pieces(node.left) + _pieces(node.right)
    return []


def person_facing_messages() -> list[tuple[str, str]]:
    """(where, longest literal piece) of every error/warning log line and every error raised."""
    found = []
    for path in sorted((REPO / "agent").rglob("*.py")):
        rel = path.relative_to(REPO / "agent")
        if rel.parts[0] == "sandbox" and rel.name != "command.py":  # the sandbox's answers are Qonto's words
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(getattr(func, "value", None), "id", None)
            message = None
            if owner == "log" and name in ("error", "warning"):
                message = node.args[0]
            elif name == "Refused" and len(node.args) >= 4:
                message = node.args[3]
            elif name in ERROR_TYPES:
                message = node.args[0]
            pieces = [p.strip(" .;:`()\"") for p in _pieces(message)] if message is not None else []
            pieces = [p for p in pieces if len(p) >= MIN_FRAGMENT]
            if pieces:
                found.append((f"{rel}:{node.lineno}", max(pieces, key=len)))
    return found


def test_the_message_walk_reads_every_package():
    walked = {where.split("/")[0] for where, _ in person_facing_messages() if "/" in where}
    assert {"inbox", "outbox", "qonto"} <= walked


def test_every_message_a_person_can_see_is_in_the_troubleshooting_table():
    table = README[README.index("## Troubleshooting"):]
    missing = [f"{where}: {piece}" for where, piece in person_facing_messages() if piece not in table]
    assert not missing, "add these messages to README's troubleshooting table:\n" + "\n".join(missing)


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    command = "python -m pip install -e '.[test]' && python -m pytest"
    assert command in README and command in ci


def test_configuration_reference_lists_every_key_of_the_example_with_its_default():
    import tomllib

    import tomli_w

    reference = README[README.index("## Configuration reference"):README.index("## Commands")]
    example = tomllib.loads((REPO / "config.toml.example").read_text())
    for section, values in example.items():
        for key, value in values.items():
            row = next((line for line in reference.splitlines() if f"`[{section}] {key}`" in line), None)
            assert row is not None, f"[{section}] {key} is missing from the README's reference"
            shown = json.dumps(value) if isinstance(value, list) else tomli_w.dumps({"v": value}).strip()[4:]
            assert f"`{shown}`" in row, f"[{section}] {key}: the README shows another default"


def test_ci_installs_exactly_the_lowest_versions_pyproject_allows():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    bounds = {}
    for requirement in requirements:
        name, _, version = requirement.partition(">=")
        assert version and "," not in version, f"{requirement}: give every dependency a tested lower bound"
        bounds[name.strip().lower().replace("_", "-")] = version.strip()
    pins = {}
    for line in (REPO / ".ci" / "floors.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    assert pins == bounds
    assert "-c .ci/floors.txt" in (REPO / ".ci" / "run").read_text()
