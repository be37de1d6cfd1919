"""One owner per vocabulary: metric names live in workbench/metrics.py and the run directory's folder
names in workbench.run.Folder; the code reaches them through those names, never as fresh string literals.

The scans read the source with :mod:`ast`, so comments, docstrings and prose in messages never count:
only a string constant that *is* a metric name, or a folder name joined into a path or handed to a
:class:`~workbench.run.Run` table method. A stage name that happens to equal a folder name
(``reads=("train",)``, the manifest's ``stages["train"]``) is neither.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from workbench import metrics
from workbench.run import Folder
from workbench.runner import Stage
from workbench.stages import STAGES

PACKAGE = Path(__file__).resolve().parent.parent / "workbench"
# mteb's retrieval names at a cutoff (ndcg_at_10, recall_at_100, mrr_at_10, ...) and F1: a string equal
# to one of them means the metric ("accuracy", "precision", "recall" also name a passkey column and the
# training precision, so they are left to review)
METRIC_NAME = re.compile(rf"^(?:{'|'.join(p.removesuffix('_at_') for p in metrics.RETRIEVAL_PREFIXES)})_at_\d+$|^f1$")
# the Run methods whose first argument is a folder
RUN_FOLDER_METHODS = {"stage_dir", "table_path", "table_languages", "read_table", "write_table",
                      "write_table_chunks", "has_table"}
FOLDER_NAMES = {folder.value for folder in Folder}


def _modules(*skip: str) -> list[Path]:
    skipped = {path for pattern in skip for path in PACKAGE.rglob(pattern)}
    return [path for path in sorted(PACKAGE.rglob("*.py")) if path not in skipped]


def _strings(node: ast.AST) -> list[str]:
    return [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else []


def _folder_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """Folder names written as text where a folder is meant: ``root / "eval"``, ``run.stage_dir("eval")``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            candidates = _strings(node.left) + _strings(node.right)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in RUN_FOLDER_METHODS \
                and node.args:
            candidates = _strings(node.args[0])
        else:
            continue
        found += [(node.lineno, text) for text in candidates if text in FOLDER_NAMES]
    return found


def test_metric_names_are_written_only_in_workbench_metrics():
    stray = []
    for path in _modules("metrics.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        stray += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and METRIC_NAME.match(node.value)]
    assert not stray, "metric names written as text; use the constants of workbench/metrics.py:\n" + "\n".join(stray)


def test_run_folders_are_reached_through_folder_members():
    stray = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        stray += [f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}" for line, text in _folder_literals(tree)]
    assert not stray, "run folder names written as text; use workbench.run.Folder:\n" + "\n".join(stray)


def test_the_scans_find_what_they_look_for():
    # each scan must be able to fail: fed the code it forbids, it reports it
    code = 'x = run.stage_dir("eval") / "results.parquet"\ny = root / "accepted"\nz = run.read_table("plan", "de", S)\n' \
           'w = run.stage_dir(Folder.EVAL)\nreads = ("train",)\n'
    assert sorted(_folder_literals(ast.parse(code))) == [(1, "eval"), (2, "accepted"), (3, "plan")]
    assert METRIC_NAME.match("ndcg_at_10") and METRIC_NAME.match("mrr_at_10") and METRIC_NAME.match("f1")
    assert not METRIC_NAME.match("ndcg_at_") and not METRIC_NAME.match("the ndcg_at_10 column")


def test_every_stage_writes_run_folders_and_a_string_fails_at_definition():
    for stage in STAGES:
        assert stage.writes and all(isinstance(folder, Folder) for folder in stage.writes), stage.name
    fields = dict(reads=(), sections=(), body=lambda inputs: None)
    with pytest.raises(TypeError, match=r"Stage 'x': field 'writes' must be a tuple of workbench.run.Folder"):
        Stage("x", writes="accepted/<lang>.parquet", **fields)
    with pytest.raises(TypeError, match="field 'writes'"):
        Stage("x", writes=("accepted",), **fields)
    assert Stage("x", writes=(Folder.ACCEPTED,), **fields).writes == (Folder.ACCEPTED,)
