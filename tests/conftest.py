"""Shared fixtures: paths to the repo and to ../shared/data, and a fresh languages copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
