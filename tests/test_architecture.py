"""The arrows of ARCHITECTURE.md, kept true: which package may import which, no cycles, and the
commands that do not serve the sandbox never load it."""

from __future__ import annotations

import ast
import socket
import subprocess
import sys
from pathlib import Path

from support import REPO, agent_env

# (importer prefix, forbidden prefixes, allowed exceptions)
RULES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("agent.base", ("agent",), ("agent.base",)),
    ("agent.qonto", ("agent.inbox", "agent.outbox", "agent.service", "agent.state", "agent.sandbox",
                     "agent.cli", "agent.status", "agent.demo",
                     "agent.base.files"), ()),  # tokens are saved through the store it is given
    ("agent.state", ("agent.inbox", "agent.outbox", "agent.service", "agent.qonto", "agent.sandbox",
                     "agent.config"), ()),
    ("agent.outbox", ("agent.inbox", "agent.service", "agent.sandbox", "agent.cli", "agent.notify"), ()),
    ("agent.inbox", ("agent.outbox", "agent.service", "agent.sandbox", "agent.cli", "agent.notify"), ()),
    ("agent.notify", ("agent.inbox", "agent.outbox", "agent.qonto", "agent.state", "agent.service",
                      "agent.sandbox", "agent.cli"), ()),  # told by `service`
    ("agent.sandbox", ("agent.qonto", "agent.config", "agent.inbox", "agent.outbox", "agent.state",
                       "agent.service"), ("agent.qonto.limits",)),
]


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, module: str) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import, `from x import y` counted as x.y too."""
    found: list[tuple[str, bool]] = []
    top = set()
    for node in getattr(tree, "body", []):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top.add(id(node))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if not node.level else ".".join(module.split(".")[:-node.level] + [node.module])
            found.append((base, id(node) in top))
            found += [(f"{base}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(root: Path) -> list[str]:
    """Every import under the package at `root` that breaks a rule, and every import cycle."""
    graph: dict[str, set[str]] = {}
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(root, path)
        imports = _imports(ast.parse(path.read_text()), module)
        graph[module] = {name for name, top in imports if top and name.startswith(root.name + ".")}
        for prefix, forbidden, allowed in RULES:
            if not _within(module, prefix):
                continue
            problems += [f"{module} imports {name}" for name, _ in imports
                         if any(_within(name, f) for f in forbidden) and not any(_within(name, a) for a in allowed)]
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(n for n in graph.get(node, ()) if n in graph):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_the_agent_keeps_its_arrows():
    assert violations(REPO / "agent") == []


def test_the_contract_catches_a_wrong_arrow_and_a_cycle(tmp_path):
    root = tmp_path / "agent"
    for package in ("base", "qonto", "inbox"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "qonto" / "client.py").write_text("from agent.inbox.filing import Filing\n")
    (root / "inbox" / "filing.py").write_text("from agent.inbox import pipeline\n")
    (root / "inbox" / "pipeline.py").write_text("from agent.inbox.filing import Filing\n")
    (root / "base" / "times.py").write_text("def f():\n    from agent.qonto import client\n")
    found = violations(root)
    assert "agent.qonto.client imports agent.inbox.filing" in found
    assert "agent.base.times imports agent.qonto" in found
    assert any(p.startswith("import cycle:") and "agent.inbox.pipeline" in p for p in found)


def _loaded_sandbox_modules(*argv: str) -> str:
    """The sandbox modules (besides its light command module) that `qonto-agent *argv` loaded, as printed."""
    code = ("import sys\nfrom agent import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('agent.sandbox.') and m != 'agent.sandbox.command'))")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO,
                          env=agent_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_help_and_status_do_not_load_the_sandbox(tmp_path):
    assert _loaded_sandbox_modules("--help") == "[]"
    (tmp_path / "config.toml").write_text("")  # defaults: status describes them
    assert _loaded_sandbox_modules("-c", str(tmp_path / "config.toml"), "status") == "[]"
    with socket.socket() as taken:  # the sandbox command loads it (and then fails on a taken port)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert "agent.sandbox.server" in _loaded_sandbox_modules("sandbox", "--port", str(taken.getsockname()[1]))


MAX_MODULE_LINES, MAX_CLASS_LINES, MAX_FUNCTION_LINES = 420, 260, 60


def oversized(root: Path) -> list[str]:
    """Modules, classes and functions past the sizes a reader can hold in mind at once."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(root.parent)
        if (lines := text.count("\n")) > MAX_MODULE_LINES:
            found.append(f"{rel}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                limit = MAX_CLASS_LINES
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = MAX_FUNCTION_LINES
            else:
                continue
            if (length := node.end_lineno - node.lineno + 1) > limit:
                found.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    return found


def test_modules_classes_and_functions_stay_small():
    assert oversized(REPO / "agent") == []
