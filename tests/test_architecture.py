"""DESIGN.md's import rules, checked on the source with ``ast``."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "clinalign"
CROSS_CUTTING = {"store", "schemas", "audit", "settings", "progress"}
PURE_TEXT = {"guardrails", "phi"}  # pure functions on text that stages may call (scoring, residual PHI scan)
STAGES = {"ingest", "deidentify", "curate", "generate", "annotate", "preferences", "evaluate", "report"}
SHELLS = {"cli", "demo", "web"}
HEAVY = {"torch", "transformers", "trl", "peft", "datasets"}
HEAVY_ALLOWED = {"generate", "evaluate", "serve", "lm"}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level?) for every import in a file."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [(name, id(node) in top) for name in names]
    return found


def clinalign_modules(path: Path) -> set[str]:
    return {name.split(".")[1] for name, _ in imports(path) if name.startswith("clinalign.")}


def main_file(name: str) -> Path:
    return PACKAGE / name / "__init__.py" if (PACKAGE / name).is_dir() else PACKAGE / f"{name}.py"


def stage_files(stage: str) -> list[Path]:
    """A stage is a module, or a package of the same name (DESIGN.md: split past ~500 lines)."""
    package = PACKAGE / stage
    return sorted(package.glob("*.py")) if package.is_dir() else [PACKAGE / f"{stage}.py"]


def test_stages_import_only_cross_cutting_modules():
    for stage in STAGES:
        for path in stage_files(stage):
            used = clinalign_modules(path) - {"__init__", "__version__", stage}  # a package imports its own parts
            allowed = CROSS_CUTTING | PURE_TEXT | {"lm"}
            assert used <= allowed, f"{path.name} imports {sorted(used - allowed)}"


def test_trainers_import_only_cross_cutting_modules_and_their_package():
    for path in (PACKAGE / "train").glob("*.py"):
        used = clinalign_modules(path)
        allowed = CROSS_CUTTING | PURE_TEXT | {"train"}
        assert used <= allowed, f"{path.name} imports {sorted(used - allowed)}"


def test_nothing_but_shells_imports_a_shell():
    for path in PACKAGE.rglob("*.py"):
        if path.stem in SHELLS or path.parent.name in SHELLS:  # a shell's own parts (web/*.py) may import it
            continue
        assert not clinalign_modules(path) & SHELLS, f"{path} imports a shell"


def test_cross_cutting_modules_do_not_import_stages():
    for name in CROSS_CUTTING | PURE_TEXT | {"lm", "accounts"}:
        used = clinalign_modules(main_file(name))
        assert not used & (STAGES | {"train"}), f"{name}.py imports {sorted(used & STAGES)}"


def test_heavy_libraries_are_imported_lazily_outside_training_and_models():
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "train" or path.stem in HEAVY_ALLOWED:
            continue
        eager = {name.split(".")[0] for name, top in imports(path) if top} & HEAVY
        assert not eager, f"{path.relative_to(PACKAGE)} imports {sorted(eager)} at module level"


def test_every_stage_module_documents_what_it_reads_and_writes():
    for stage in STAGES | {f"train/{p.stem}" for p in (PACKAGE / "train").glob("[!_]*.py")} - {
        "train/common",
        "train/scratch",
    }:
        head = main_file(stage).read_text().split('"""')[1]
        assert "Reads:" in head and "Writes:" in head, f"{stage}.py docstring lacks Reads:/Writes:"
