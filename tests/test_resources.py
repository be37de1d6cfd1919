"""Every file the code finds through ``workbench.resources`` exists and ships in the wheel.

The calls are found in the source (each ``package_path(...)``, ``data_dir(...)`` and
``shipped_dir(...)`` with literal arguments), so a new file asked for there is checked without
editing this test; a file that exists in the checkout but is missing from pyproject's
``package-data`` / ``data-files`` would work here and fail in an installed wheel.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from workbench.resources import package_path

from conftest import REPO

PACKAGE = REPO / "workbench"
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def _literal_calls(function: str) -> set[tuple[str, ...]]:
    """The literal string arguments of every call of ``function`` in workbench/ (calls with a
    non-literal argument are not resolvable here and are left out)."""
    found = set()
    for file in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == function:
                args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                if args and len(args) == len(node.args):
                    found.add(tuple(args))
    return found


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) if path.is_dir() else [path]


def _in_package_data(file: Path) -> bool:
    """True when a ``[tool.setuptools.package-data]`` glob of the file's package names it."""
    for package, patterns in SETUPTOOLS["package-data"].items():
        package_dir = REPO / package.replace(".", "/")
        if file.is_relative_to(package_dir) and any(file in package_dir.glob(p) for p in patterns):
            return True
    return False


def test_every_package_file_the_code_asks_for_exists_and_is_package_data():
    asked = _literal_calls("package_path")
    # the scan itself works: it finds at least the calls there were when this test was written
    assert {("templates",), ("encoder", "instructions.toml"), ("eval", "scale.toml"),
            ("eval", "passkey_needles.toml"), ("train", "configs")} <= asked
    for parts in sorted(asked):
        path = package_path(*parts)
        assert path.exists(), f"package_path{parts}: {path} does not exist"
        assert path.resolve().is_relative_to(PACKAGE.resolve()), f"package_path{parts} resolves outside {PACKAGE}"
        files = _files(path)
        assert files, f"package_path{parts}: {path} is an empty folder"
        unshipped = [str(f.relative_to(REPO)) for f in files if not _in_package_data(f)]
        assert not unshipped, f"not in pyproject's [tool.setuptools.package-data], so not in the wheel: {unshipped}"


def test_every_data_folder_the_code_asks_for_exists_and_is_data_files():
    asked = {args[0] for args in _literal_calls("data_dir") | _literal_calls("shipped_dir")}
    assert {"languages", "prompts", "reports/templates", "reports/reference"} <= asked
    data_files = SETUPTOOLS["data-files"]
    for name in sorted(asked):
        folder = REPO / name
        assert folder.is_dir(), f"data folder {name!r} does not exist in the checkout"
        patterns = data_files.get(f"share/workbench/{name}")
        assert patterns, f"data folder {name!r} has no [tool.setuptools.data-files] entry share/workbench/{name}"
        shipped = {p for pattern in patterns for p in REPO.glob(pattern)}
        # data-files globs are flat: the folder's own files ship (reports/reference/mteb_tatoeba/
        # holds the raw mteb results the shipped CSV was built from, read by no code)
        unshipped = [str(f.relative_to(REPO)) for f in sorted(folder.iterdir()) if f.is_file() and f not in shipped]
        assert not unshipped, f"not matched by data-files share/workbench/{name}: {unshipped}"


def test_no_module_finds_its_own_files_from_dunder_file():
    """One way to find package files: through workbench.resources, not ``Path(__file__)``
    (workbench/testing/'s helper scripts, run as scripts, keep their ``--data`` defaults)."""
    offenders = []
    for file in sorted(PACKAGE.rglob("*.py")):
        if file.name == "resources.py" or "testing" in file.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(file.read_text(encoding="utf-8"))
        offenders += [f"{file.relative_to(REPO)}:{n.lineno}" for n in ast.walk(tree)
                      if isinstance(n, ast.Name) and n.id == "__file__"]
    assert not offenders, f"use workbench.resources.package_path instead of __file__ at {offenders}"
