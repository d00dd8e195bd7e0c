"""Imports run one way (ARCHITECTURE.md, "Layers"): every `import` statement of the tree, lazy ones included, is
read with `ast` and checked against the layer rules; and importing a layer in a fresh interpreter loads nothing
above it (the analysis does not even load torch)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package (as a path prefix) -> module prefixes it must never import
FORBIDDEN = {
    "salt/models": ("salt.objectives", "salt.train", "salt.eval", "salt.study", "studies", "analysis"),
    "salt/masks": ("salt.objectives", "salt.train", "salt.eval", "salt.study", "studies", "analysis"),
    "salt/data": ("salt.objectives", "salt.train", "salt.eval", "salt.study", "studies", "analysis"),
    "salt/io.py": ("salt.", "torch"),
    "salt/identity.py": ("salt.", "torch"),   # run ids: stdlib only (salt.layout, so the analysis, imports it)
    "salt/errors.py": ("salt.", "torch"),
    "salt/registry.py": ("salt.", "torch"),   # named entries (data sources): stdlib only
    "salt/layout.py": ("salt.checkpoint", "salt.objectives", "salt.train", "salt.eval", "salt.study", "torch"),
    "salt/runlock.py": ("salt.checkpoint", "salt.objectives", "salt.train", "salt.eval", "salt.study", "torch"),
    "salt/checkpoint.py": ("salt.objectives", "salt.train", "salt.eval", "salt.study"),
    "salt/schedules.py": ("salt.", "torch"),
    "salt/losslog.py": ("salt.", "torch"),   # training-loss smoothing: stdlib only (the analysis imports it)
    "salt/provenance.py": ("salt.",),        # stdlib at import; torch only inside hardware_description (tested)
    "salt/objectives": ("salt.train", "salt.eval", "salt.study", "studies", "analysis"),
    "salt/train": ("salt.eval", "salt.study", "studies", "analysis"),
    "salt/eval": ("salt.train", "salt.study", "studies", "analysis"),
    "salt": ("studies", "analysis"),
    "analysis": ("torch", "salt.train", "salt.objectives", "salt.study", "salt.models", "studies"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, at any depth (lazy imports inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def rules_for(relative: str) -> tuple[str, ...]:
    """Every rule whose package contains the file (salt/eval/x.py obeys salt/eval's and salt's)."""
    return tuple(p for prefix, prefixes in FORBIDDEN.items()
                 if relative == prefix or relative.startswith(prefix + "/") for p in prefixes)


def violations() -> list[str]:
    bad = []
    for path in sorted([*REPO.glob("salt/**/*.py"), *REPO.glob("analysis/**/*.py")]):
        relative = path.relative_to(REPO).as_posix()
        forbidden = rules_for(relative)
        for line, module in imported_modules(path):
            if any(module == p.rstrip(".") or module.startswith(p if p.endswith(".") else p + ".") for p in forbidden):
                bad.append(f"{relative}:{line} imports {module}")
    return bad


def test_imports_run_one_way():
    assert violations() == []


def test_records_are_built_in_one_place():
    """Issue 21: every evaluation record in salt/ comes from one constructor call (salt.eval.evaluate)."""
    sites = [f"{path.relative_to(REPO)}:{n}" for path in sorted(REPO.glob("salt/**/*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if "EvalRecord(" in line]
    assert len(sites) == 1 and sites[0].startswith("salt/eval/evaluate.py:"), sites


def test_the_demo_is_the_top_of_salt():
    """salt.demo is a small study plan (it imports salt.study): only the command line, salt/__main__.py, imports
    it, so salt.study and everything below stay free of it."""
    importers = sorted(path.relative_to(REPO).as_posix() for path in REPO.glob("salt/**/*.py")
                       if any(module == "salt.demo" for _, module in imported_modules(path)))
    assert importers == ["salt/__main__.py"]


def test_the_checker_sees_lazy_imports(tmp_path):
    """The rules would catch what they forbid: a lazy upward import inside a function is found."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from salt.train.loop import train\n    import analysis.collect\n")
    assert imported_modules(probe) == [(2, "salt.train.loop"), (3, "analysis.collect")]
    assert "salt.train" in rules_for("salt/objectives/pixel.py") and "analysis" in rules_for("salt/demo.py")


def _loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module, must_not_load", [
    ("analysis", ("torch", "salt.train", "salt.objectives", "salt.study")),
    ("salt.provenance", ("torch",)),
    ("salt.objectives", ("salt.train", "salt.eval", "salt.study", "analysis", "studies")),
    ("salt.models", ("salt.objectives", "salt.train", "salt.eval", "salt.study")),
    ("salt.masks", ("salt.objectives", "salt.train", "salt.eval", "salt.study")),
    ("salt.data", ("salt.objectives", "salt.train", "salt.eval", "salt.study")),
    ("salt.eval.evaluate", ("salt.train", "salt.study", "analysis")),
    ("salt.study.cli", ("analysis", "studies")),
])
def test_a_layer_loads_nothing_above_it(module, must_not_load):
    loaded = _loaded_after_import(module)
    above = sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in must_not_load))
    assert above == [], f"importing {module} loads {above}"
