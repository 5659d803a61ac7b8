"""Import directions: jobs → pipelines → sseg, schemas shared; sseg imports neither Ray nor MLflow."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# what each layer may import from the project (besides itself)
ALLOWED = {
    "sseg": {"sseg"},
    "schemas": {"schemas", "sseg"},
    "pipelines": {"pipelines", "sseg", "schemas"},
    "jobs": {"jobs", "pipelines", "sseg", "schemas", "_bootstrap"},
}
PROJECT = {"sseg", "schemas", "pipelines", "jobs", "_bootstrap", "tests", "benchmarks", "research"}
FORBIDDEN_IN_SSEG = {"ray", "mlflow", "argparse"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_layers_import_only_downwards() -> None:
    wrong = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((ROOT / layer).rglob("*.py")):
            for name in _imports(path) & PROJECT:
                if name not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, wrong


def test_sseg_imports_neither_ray_nor_mlflow_nor_argparse() -> None:
    wrong = [f"{p.relative_to(ROOT)} imports {n}" for p in sorted((ROOT / "sseg").rglob("*.py"))
             for n in _imports(p) & FORBIDDEN_IN_SSEG]
    assert not wrong, wrong


def test_jobs_are_thin_wiring() -> None:
    long = [f"{p.name}: {n} lines" for p in sorted((ROOT / "jobs").glob("*.py"))
            if (n := len(p.read_text().splitlines())) > 50]
    assert not long, long


def _module_imports(path: Path) -> set[str]:
    """Full dotted names of the modules ``path`` imports (any depth: inside functions too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_runs_import_no_other_run_and_stay_short() -> None:
    """A run orchestrates one job; what two runs share lives in pipelines/training, pipelines/lineage.py or
    pipelines/evaluation, so pipelines/runs/ is no library for the other runs."""
    runs = sorted((ROOT / "pipelines" / "runs").glob("*.py"))
    crossing = [f"{p.name} imports {m}" for p in runs for m in _module_imports(p) if m.startswith("pipelines.runs")]
    assert not crossing, crossing
    long = [f"{p.name}: {n} lines" for p in runs if (n := len(p.read_text().splitlines())) > 200]
    assert not long, long


def test_private_ray_apis_only_in_ray_private() -> None:
    """Ray internals are reached through pipelines/io/ray_private.py alone (tests/test_ray_private.py
    checks they still exist)."""
    markers = ("._internal", "_execution_idx", "._logical_plan")
    wrong = [f"{p.relative_to(ROOT)}: {m}" for layer in ("pipelines", "sseg", "schemas", "jobs")
             for p in sorted((ROOT / layer).rglob("*.py")) if p.name != "ray_private.py"
             for m in markers if m in p.read_text()]
    assert not wrong, wrong


def test_readme_is_a_user_guide_that_names_every_job_and_config() -> None:
    """The README stays short (tables, run ids and logs live in docs/) and names every job and paper config."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 180
    jobs = [p.stem for p in (ROOT / "jobs").glob("*.py") if not p.stem.startswith("_")]
    missing = [j for j in jobs if f"jobs/{j}.py" not in readme and f"`{j}`" not in readme]
    assert not missing, missing
    named = set(re.findall(r"[\w.]+\.yaml", readme))
    for prefix, options, suffix in re.findall(r"(\w+)\{([\w,]+)\}(\.yaml)", readme):  # self_train_{voc,coco}.yaml
        named.update(f"{prefix}{option}{suffix}" for option in options.split(","))
    unnamed = [p.name for p in (ROOT / "configs").glob("*.yaml") if p.name not in named]
    assert not unnamed, unnamed
