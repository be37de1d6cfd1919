"""Shared fixtures: paths to the repo and to ../shared/data, a fresh languages copy, the language
registry, the default filter section and its LID ensemble (loaded once: the models take seconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from workbench.config import FilterSection
from workbench.filter.lid import Ensemble
from workbench.languages import Registry, load_registry

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; CI always has it, so a skip there would be a bug (see README)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: shared test data is only on project machines")
    return SHARED_DATA


@pytest.fixture
def languages_copy(tmp_path: Path) -> Path:
    """A writable copy of languages/ for tests that break a file on purpose."""
    target = tmp_path / "languages"
    shutil.copytree(REPO / "languages", target)
    return target


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The shipped language registry (read-only: tests that change a file use ``languages_copy``)."""
    return load_registry()


@pytest.fixture(scope="session")
def section() -> FilterSection:
    """The default ``[filter]`` section."""
    return FilterSection()


@pytest.fixture(scope="session")
def ensemble(registry: Registry, section: FilterSection) -> Ensemble:
    """The default LID ensemble over the shipped registry."""
    return Ensemble.load(registry, section)
