"""The conditions a number was measured under, as columns: the one vocabulary eval writes, the
reference loader fills in for published numbers, and the report compares on.

A number is comparable with another only when every condition matches (:func:`differences`).
The report filters and joins on these columns; it never reads a condition out of a dataset label.

| column | values | owner of the values |
|---|---|---|
| ``benchmark`` | ``miracl``, ``xquad``, ``beir``, ``tatoeba``, ``passkey`` | :data:`workbench.eval.targets.EVAL_TASKS` |
| ``task_kind`` | :data:`TASK_KINDS` | here |
| ``corpus`` | :data:`CORPORA` (full corpus, hard negatives v1/v2, a subset, a local folder) | here |
| ``split`` | the dataset's split (``dev``, ``test``) | the dataset |
| ``revision`` | hub revision, ``sha256:<12 hex>`` of local files, or a release name for published numbers | the dataset |
| ``instruction`` | the exact query instruction used, ``prefix:<text>`` for a fixed prefix, :data:`NO_INSTRUCTION`, :data:`MTEB_DEFAULT_PROMPT` or :data:`NOT_STATED` | the model's contract |
| ``max_length`` | tokens per text (null: not applicable, BM25; or not stated by a source) | the model's contract |
| ``regime`` | :data:`REGIMES`, per language | :func:`regime` |

Example::

    differences({"corpus": "subset", ...}, {"corpus": "full", ...})   # -> ["corpus"]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workbench.metrics import ACCURACY, NDCG_AT_10

# --- task kinds --------------------------------------------------------------------------------
RETRIEVAL = "retrieval"
BITEXT = "bitext-mining"
PASSKEY = "passkey"  # the long-context probe (workbench/eval/passkey.py): top-1 over documents built per cell
TASK_KINDS = (RETRIEVAL, BITEXT, PASSKEY)
# The one metric per task kind the report's tier question is answered on, fixed before any number is seen
# (the passkey probe has its own report section, per length and depth, and no tier question).
PRIMARY_METRIC = {RETRIEVAL: NDCG_AT_10, BITEXT: ACCURACY}

# --- corpus variants: numbers are comparable only within one -------------------------------------
FULL = "full"
HARD_NEGATIVES_V1 = "hard-negatives-v1"
HARD_NEGATIVES_V2 = "hard-negatives-v2"
SUBSET = "subset"
LOCAL = "local"  # a local folder with no published corpus to relate it to (a BEIR folder of one's own)
CORPORA = (FULL, HARD_NEGATIVES_V1, HARD_NEGATIVES_V2, SUBSET, LOCAL)
CORPUS_WORDS = {
    FULL: "full corpus",
    HARD_NEGATIVES_V1: "hard negatives v1 (reduced corpus)",
    HARD_NEGATIVES_V2: "hard negatives v2 (reduced corpus)",
    SUBSET: "a subset of the corpus",
    LOCAL: "the folder's own corpus",
}

# --- instructions --------------------------------------------------------------------------------
NO_INSTRUCTION = "none"
NOT_STATED = "not stated"
# mteb's MIRACLRetrievalHardNegatives (v1) has no task prompt, so instruction models ran with mteb's
# default for a task without one, not with MIRACL's instruction (mteb added the .v2 task to fix that).
MTEB_DEFAULT_PROMPT = "mteb default prompt (task without a prompt)"
PREFIX = "prefix:"
MIRACL_INSTRUCTION = "Given a question, retrieve Wikipedia passages that answer the question"
# Where the instruction came from (column ``instruction_source``).
INSTRUCTION_SOURCES = ("task prompt", "instruction table", "model prompt", "fixed prefix", "none", "source")


def prefix(text: str) -> str:
    """The ``instruction`` value of a model that puts a fixed text before every query (``query: ``)."""
    return f"{PREFIX}{text}"


def instruction_words(value: str | None) -> str:
    """A short name for an ``instruction`` value, for tables."""
    if value is None or value == NOT_STATED:
        return "instruction not stated"
    if value == NO_INSTRUCTION:
        return "no instruction"
    if value.startswith(PREFIX):
        return f"fixed prefix '{value[len(PREFIX):]}'"
    if value == MTEB_DEFAULT_PROMPT:
        return value
    return f"instruction '{value}'"


# --- training regimes, per language ----------------------------------------------------------------
SUPERVISED = "trained on this benchmark's training split"
ZERO_SHOT = "zero-shot (no training data of this benchmark for this language)"
LEXICAL = "no training (lexical)"
REGIMES = (SUPERVISED, ZERO_SHOT, LEXICAL, NOT_STATED)
# MIRACL has training data for 16 of its 18 languages; German and Yoruba are evaluation-only (Zhang
# et al. 2023, TACL), so every model is zero-shot on them, whatever it was trained on.
NO_TRAIN_SPLIT = {"miracl": frozenset({"de", "yo"})}
# Model families fine-tuned on MIRACL train: e5-mistral (paper appendix; mteb lists MIRACL among its
# training data), multilingual-e5 (arXiv 2402.05672), bge-m3 (arXiv 2402.03216). Matched as parts of
# a model name or path.
TRAINED_ON = {"miracl": ("e5-mistral", "multilingual-e5", "bge-m3")}
# Benchmarks that have no training split at all (XQuAD and the LASER Tatoeba sets are test sets; the
# passkey probe builds its documents at eval time).
NO_TRAIN_BENCHMARKS = frozenset({"xquad", "tatoeba", "passkey"})
# Models whose training data is known and holds none of these benchmarks' training splits.
KNOWN_ZERO_SHOT = ("minilm", "all-minilm-l6-v2", "paraphrase-multilingual-minilm")


def regime(model: str | None, benchmark: str, language: str, *, lexical: bool = False,
           trained_from: str | None = None) -> str:
    """The training regime of ``model`` on ``benchmark`` for ``language``.

    ``trained_from``: for a model this workbench fine-tuned, its base model (synthetic data adds no
    benchmark training data, so it inherits the base's regime).
    """
    if lexical:
        return LEXICAL
    name = " ".join(n for n in (model, trained_from) if n).lower()
    if benchmark in NO_TRAIN_BENCHMARKS or language in NO_TRAIN_SPLIT.get(benchmark, ()):
        return ZERO_SHOT
    if any(family in name for family in TRAINED_ON.get(benchmark, ())):
        return SUPERVISED
    if any(known in name for known in KNOWN_ZERO_SHOT):
        return ZERO_SHOT
    return NOT_STATED


# --- comparability -------------------------------------------------------------------------------
# Conditions of the data: two numbers on different data are never compared.
DATA_CONDITIONS = ("benchmark", "task_kind", "corpus", "split", "revision")
# Conditions of how the system ran: a published gap needs them equal too; a paired comparison of two
# systems measured here names the ones that differ (a controlled comparison differs in one cause).
SYSTEM_CONDITIONS = ("instruction", "max_length", "regime")
CONDITIONS = (*DATA_CONDITIONS, *SYSTEM_CONDITIONS)
# Against a published number: a paper names the release it used (MIRACL v1.0), not a digest of files, so
# the corpus variant and split carry the comparison there and the revision is shown, not matched.
PUBLISHED_CONDITIONS = tuple(c for c in CONDITIONS if c != "revision")
# Compared only where both sides state them: published numbers name no dataset revision beyond the
# release, and papers rarely state the max length they evaluated with.
COMPARED_WHEN_STATED = ("revision", "max_length")


def differences(a: Mapping[str, Any], b: Mapping[str, Any], columns: tuple[str, ...] = CONDITIONS) -> list[str]:
    """The condition columns on which ``a`` and ``b`` differ (empty: comparable).

    ``instruction`` and ``regime`` "not stated" on either side count as a difference: a match
    cannot be confirmed. ``revision`` and ``max_length`` are compared only where both are stated.
    A lexical system (BM25) has no instruction or max_length to match, and its regime counts as
    zero-shot: it saw no training data of the benchmark either.
    """
    differ = []
    lexical = LEXICAL in (a.get("regime"), b.get("regime"))
    for column in columns:
        x, y = a.get(column), b.get(column)
        if column in COMPARED_WHEN_STATED and (x is None or y is None):
            continue
        if lexical and column in ("instruction", "max_length"):
            continue  # BM25 takes no instruction and has no max_length: nothing to match
        if column == "regime":  # what matters is whether this benchmark's training data was seen
            x, y = (ZERO_SHOT if v == LEXICAL else v for v in (x, y))
        if x is None or y is None or x == NOT_STATED or y == NOT_STATED or x != y:
            differ.append(column)
    return differ


def difference_words(column: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """'corpus: subset vs full' for a condition that differs, in words."""
    def show(value: Any) -> str:
        if column == "instruction":
            return instruction_words(value)
        if column == "corpus":
            return CORPUS_WORDS.get(value, str(value))
        return NOT_STATED if value is None else str(value)

    return f"{column.replace('_', ' ')}: {show(a.get(column))} vs {show(b.get(column))}"
