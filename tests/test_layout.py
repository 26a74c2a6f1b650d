"""The package layout holds: the layering contracts, private names and re-export-only inits.

The contracts themselves live in pyproject.toml (``[tool.importlinter]``) and are checked by
import-linter's ``lint-imports``; this file runs it so that a change that breaks the layering
fails the suite (and CI), and checks by hand what import-linter does not: that no *name*
starting with an underscore is imported from another sla_nas package, and that each package's
``__init__`` has a docstring and only re-exports. Each checker is also run once on a mistake
made on purpose, so a checker that has stopped seeing anything fails too.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sla_nas"


def _lint_imports() -> str:
    """The ``lint-imports`` beside the running Python (the test extra installs it)."""
    exe = Path(sys.executable).parent / "lint-imports"
    found = str(exe) if exe.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports not found: install the test extra (pip install -e '.[test]')")
    return found


def _run_contracts(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [_lint_imports(), "--no-cache", "--no-logo", str(cwd / "pyproject.toml")],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


def test_import_contracts_are_kept():
    proc = _run_contracts(ROOT)
    assert proc.returncode == 0, f"import-linter contracts broken:\n{proc.stdout}\n{proc.stderr}"
    assert "0 broken" in proc.stdout, proc.stdout


def test_every_package_is_in_the_layers_contract():
    """A new package must be placed in the layering (or be a re-export shim), not left out of
    every contract."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]
    layered = {name.strip() for c in contracts if c["type"] == "layers" for layer in c["layers"]
               for name in layer.replace(":", "|").split("|")}
    shims = {m for c in contracts if c["name"].startswith("the shims")
             for m in c["forbidden_modules"]}
    children = {f"sla_nas.{p.stem if p.suffix else p.name}" for p in PACKAGE.iterdir()
                if (p.suffix == ".py" and p.stem != "__init__")
                or (p.is_dir() and (p / "__init__.py").exists())}
    assert shims == {"sla_nas.cost", "sla_nas.presets", "sla_nas.train"}
    assert children - shims == layered, (children - shims) ^ layered


def test_a_forbidden_import_breaks_the_contracts(tmp_path):
    """The contracts bite: Ray imported from the spec package (a copy) fails lint-imports."""
    shutil.copytree(PACKAGE, tmp_path / "sla_nas", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    labels = tmp_path / "sla_nas" / "arch" / "labels.py"
    labels.write_text(labels.read_text() + "\nimport ray  # noqa\n")
    proc = _run_contracts(tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert "sla_nas.arch.labels -> ray" in proc.stdout, proc.stdout


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top(module: str) -> str:
    """The package a module belongs to: ``sla_nas.arch._spec`` -> ``sla_nas.arch``."""
    return ".".join(module.split(".")[:2])


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    """Imports in ``module`` of an underscore module or name from another sla_nas package."""
    here = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [(base, [alias.name for alias in node.names])]
        else:
            continue
        for target, names in targets:
            if target.split(".")[0] != "sla_nas" or _top(target) == _top(module):
                continue
            bad = [part for part in target.split(".") if _private(part)]
            bad += [name for name in names if _private(name)]
            if bad:
                found.append(f"{module}:{node.lineno} imports {', '.join(bad)} from {target}")
    return found


def test_no_underscore_name_is_imported_across_packages():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += private_imports(_module_name(path), path.read_text(), path.name == "__init__.py")
    assert not found, "import the public name from sla_nas.<package> instead:\n" + "\n".join(
        found)


@pytest.mark.parametrize("source", [
    "from sla_nas.results import _objective",
    "from sla_nas.results._confirmation import objective_of",
    "import sla_nas.search._ray",
    "from ..search import _connect",
])
def test_the_private_import_check_sees_a_mistake(source):
    assert private_imports("sla_nas.export._export", source), source


@pytest.mark.parametrize("source", [
    "from ._card import docstring",
    "from . import _standalone",
    "from sla_nas.export._card import model_card",
    "from sla_nas.results import objective_of",
    "from sla_nas import __version__",
])
def test_the_private_import_check_allows_what_the_layout_allows(source):
    assert not private_imports("sla_nas.export._export", source), source


_LAZY = (ast.If, ast.Import, ast.ImportFrom, ast.Return, ast.Raise, ast.Compare, ast.Name,
         ast.Constant, ast.Tuple, ast.Call, ast.Attribute, ast.JoinedStr, ast.FormattedValue,
         ast.alias, ast.Load, ast.Eq, ast.In, ast.arguments, ast.arg)


def init_problems(name: str, source: str) -> list[str]:
    """What in a package ``__init__`` is more than a docstring and re-exports.

    Allowed: imports, assignments to dunder names (``__all__``, ``__version__``) and a
    module-level ``__getattr__`` that only imports and returns (PEP 562), so that
    ``sla_nas.build_model`` imports torch only when it is asked for.
    """
    tree = ast.parse(source)
    problems = [] if ast.get_docstring(tree) else [f"{name}: no docstring saying what it is"]
    for node in tree.body[1:] if ast.get_docstring(tree) else tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if all(isinstance(t, ast.Name) and t.id.startswith("__") for t in targets):
                continue
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            extra = [type(n).__name__ for n in ast.walk(node)
                     if n is not node and not isinstance(n, _LAZY)]
            if not extra:
                continue
            problems.append(f"{name}:{node.lineno} __getattr__ does more than import: {extra}")
            continue
        problems.append(f"{name}:{node.lineno} {type(node).__name__} (logic belongs in a module)")
    return problems


def test_package_inits_only_reexport():
    inits = sorted(PACKAGE.rglob("__init__.py"))
    assert len(inits) >= 9, inits  # sla_nas and its eight packages
    problems = []
    for path in inits:
        problems += init_problems(str(path.relative_to(ROOT)), path.read_text())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source", [
    "from ._x import y\n",
    '"""Doc."""\ndef helper():\n    return 1\n',
    '"""Doc."""\nclass Thing:\n    pass\n',
    '"""Doc."""\nLIMIT = 3\n',
    '"""Doc."""\ndef __getattr__(name):\n    for x in name:\n        pass\n',
])
def test_the_init_check_sees_a_mistake(source):
    assert init_problems("x/__init__.py", source), source
