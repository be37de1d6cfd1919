"""Where the workbench finds the files it ships: one rule for each of the two kinds.

* **Data folders** at the top of the repository, which a user reads, edits or replaces:
  ``languages/``, ``prompts/``, ``reports/templates/``. :func:`data_dir`
  takes the folder named by its environment variable when that is set (``$WORKBENCH_LANGUAGES``,
  ``$WORKBENCH_PROMPTS``, ``$WORKBENCH_TEMPLATES``), else the checkout's folder, else the copy an
  installed wheel carries under ``<prefix>/share/workbench/`` (pyproject's ``data-files``).
* **Package files** inside ``workbench/``, which the code reads as shipped (the audit page's
  template, the encoder's instruction table, the passkey needles, eval's scale table, the DeepSpeed
  ZeRO configs): :func:`package_path`, through :mod:`importlib.resources`, the same in a checkout
  and an installed wheel (pyproject's ``package-data``). No module finds its files from
  ``__file__``; ``tests/test_resources.py`` checks that every path asked for here exists and ships.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

from workbench.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent  # a checkout; site-packages when installed
INSTALLED_ROOT = Path(sys.prefix) / "share" / "workbench"


def shipped_dir(name: str) -> Path | None:
    """The data folder ``name`` (``"languages"``, ``"reports/templates"``) of a checkout, else of an
    installed copy; None when neither exists."""
    for root in (REPO_ROOT, INSTALLED_ROOT):
        if (root / name).is_dir():
            return root / name
    return None


def data_dir(name: str, env_var: str) -> Path:
    """The data folder ``name``: ``$env_var`` if set, else :func:`shipped_dir`; one line naming
    ``env_var`` when there is none."""
    if os.environ.get(env_var):
        return Path(os.environ[env_var])
    found = shipped_dir(name)
    if found is None:
        raise ConfigError(f"cannot find the '{name}' data folder", where=str(REPO_ROOT / name),
                          fix=f"set {env_var} to the folder that holds it")
    return found


def package_path(*parts: str) -> Path:
    """A file or folder inside the ``workbench`` package, e.g. ``package_path("templates")``."""
    return Path(str(resources.files("workbench").joinpath(*parts)))
