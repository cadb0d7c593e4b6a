"""The architecture, checked on the source with ``ast``: every module under ``clinalign/`` is placed in
one kind from the stage table and the lists below, and the import rules of DESIGN.md hold.

``violations(root)`` is the whole check; the last tests add a rule-breaking module to a copy of the
package and see it caught.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from clinalign.stages import STAGES

PACKAGE = Path(__file__).resolve().parent.parent / "clinalign"

# Stage packages: the first name after ``clinalign`` of every stage module in the table (``train`` holds
# the trainers; a package's other modules are parts of its stage).
STAGE_PACKAGES = {stage.module.split(".")[1] for stage in STAGES}
CROSS_CUTTING = {
    "__init__",  # the package's version
    "store",
    "migrations",  # the store's schema history
    "schemas",
    "audit",
    "settings",
    "stages",
    "progress",
    "lm",
    "embed",
    "bundled",
    "reward_model",
    "rewards",
    "distributed",  # which process of a multi-process launch records the run
    "stats",
    "plots",
    "accounts",
    "chat_client",  # the judges' OpenAI-compatible client (annotation's AI judge, evaluation's graders)
}
PURE_TEXT = {"guardrails", "phi"}  # pure functions on text: no store, no stage, no shell
SHELLS = {"cli", "demo", "web", "serve"}
# What one shell may use of another: the demo's entry, the web server's and the services'.
SHELL_ENTRIES = {"clinalign.demo", "clinalign.web.server", "clinalign.serve"}
RAW_READERS = {"ingest", "deidentify", "store", "migrations"}  # the quarantine's only users
HEAVY = {"torch", "transformers", "trl", "peft", "datasets"}
HEAVY_ALLOWED = {"generate", "evaluate", "serve", "lm"}


def kind_of(top: str) -> str | None:
    if top in STAGE_PACKAGES:
        return "stage"
    if top in CROSS_CUTTING:
        return "cross-cutting"
    if top in PURE_TEXT:
        return "pure"
    if top in SHELLS:
        return "shell"
    return None


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module under ``root`` (the ``clinalign`` folder)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)] = path
    return found


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level?) for every import in a file; ``from a import b`` yields ``a.b``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(f"{node.module}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def names_used(path: Path) -> set[str]:
    """Every name a file imports, reads or reaches as an attribute."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            found |= {alias.name for alias in node.names}
    return found


def top_of(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def violations(root: Path) -> list[str]:
    """Every broken rule in the package at ``root``, as one line each."""
    problems = []
    for name, path in modules(root).items():
        top = top_of(name)
        kind = kind_of(top)
        where = path.relative_to(root.parent).as_posix()
        if kind is None:
            problems.append(f"{where}: cannot place module '{top}' (not a stage, cross-cutting, pure or shell)")
            continue
        used = [(dotted, at_top) for dotted, at_top in imports(path) if dotted.startswith("clinalign.")]
        for dotted, _ in used:
            other = top_of(dotted)
            other_kind = kind_of(other)
            if other == top or other == "__version__":
                continue  # a package's own parts
            if kind in ("stage", "cross-cutting", "pure") and other_kind == "shell":
                problems.append(f"{where}: a {kind} module imports the shell {dotted}")
            if kind == "stage" and other_kind == "stage":
                problems.append(f"{where}: a stage imports another stage ({dotted}); stages talk through the store")
            if kind == "cross-cutting" and other_kind == "stage":
                problems.append(f"{where}: a cross-cutting module imports the stage {dotted}")
            if kind == "pure" and other != "schemas" and other_kind != "pure":
                problems.append(f"{where}: pure text functions import {dotted} (only schemas and pure modules)")
            if kind == "shell" and other_kind == "shell" and not dotted.startswith(tuple(SHELL_ENTRIES)):
                problems.append(f"{where}: a shell imports another shell's helper {dotted}")
        if top not in RAW_READERS and "RawRecord" in names_used(path):
            problems.append(f"{where}: touches RawRecord (the quarantine is for ingest and deidentify only)")
        if top not in HEAVY_ALLOWED and top != "train":
            eager = {dotted.split(".")[0] for dotted, at_top in imports(path) if at_top} & HEAVY
            if eager:
                problems.append(f"{where}: imports {sorted(eager)} at module level (import them where used)")
    return problems


def test_every_module_is_placed_and_every_rule_holds():
    assert violations(PACKAGE) == []


def test_every_stage_in_the_table_has_its_module_config_entry_and_docstring():
    for stage in STAGES:
        module = stage.load()
        assert hasattr(module, "Config") and callable(getattr(module, stage.entry)), stage.name
        head = (module.__doc__ or "").split("\n\n")
        assert "Reads:" in module.__doc__ and "Writes:" in module.__doc__, f"{stage.module} lacks Reads:/Writes:"
        assert head[0].strip(), stage.module


def test_the_cross_cutting_modules_document_what_they_read_and_write():
    for top in CROSS_CUTTING - {"__init__", "migrations", "store", "schemas", "settings", "stages", "accounts"}:
        path = PACKAGE / f"{top}.py"
        text = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "Reads:" in text and "Writes:" in text, f"{top}.py docstring lacks Reads:/Writes:"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    root = tmp_path / "clinalign"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    assert violations(root) == []
    return root


@pytest.mark.parametrize(
    ("where", "source", "caught"),
    [
        ("novelty.py", "X = 1\n", "cannot place module 'novelty'"),
        ("curate/leak.py", "from clinalign.web.pages import render\n", "imports the shell clinalign.web.pages"),
        ("generate_more.py", "", "cannot place"),
        ("evaluate/mcq.py", "from clinalign.train import common\n", "a stage imports another stage"),
        ("curate/peek.py", "from clinalign.store import RawRecord\n", "touches RawRecord"),
        ("phi/lookup.py", "from clinalign.store import Record\n", "pure text functions import clinalign.store"),
        ("guardrails/rails.py", "import clinalign.audit\n", "pure text functions import clinalign.audit"),
        ("audit_extra.py", "", "cannot place"),
        ("store/tables.py", "from clinalign.curate import tags\n", "a cross-cutting module imports the stage"),
        ("cli/extra.py", "from clinalign.web.pages import render\n", "a shell imports another shell's helper"),
        ("report.py", "import torch\n", "imports ['torch'] at module level"),
    ],
)
def test_a_module_that_breaks_a_rule_is_caught(copy: Path, where: str, source: str, caught: str):
    path = copy / where
    path.write_text((path.read_text() if path.exists() else "") + source)
    found = violations(copy)
    assert any(caught in line for line in found), found
