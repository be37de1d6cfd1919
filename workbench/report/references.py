"""Published reference points for MIRACL (dev split), each with its source in words.

Reads, from the reference folder (``../shared/data/reference`` next to a checkout, or
``$WORKBENCH_REFERENCE_DIR``, or ``[report] reference_dir``):

- ``miracl_reference.csv`` (system, source, language, metric, value in percent): numbers
  transcribed from the BGE-M3 paper (Table 1: nDCG@10 of e5-mistral-7b-instruct,
  multilingual-e5-large and Lucene BM25 on all 18 languages) and the E5-mistral paper (Recall@100).
  Rows whose language is an average (``avg16``, ``avg18``) are kept apart as published averages.
- ``mteb_miracl_ndcg10.csv`` and ``mteb_miracl_ndcg10_removed_at_head.csv``: per-language results
  from the MTEB results repository (0-1 scale there; converted to percent here). ``MIRACLRetrieval``
  (full corpus) and ``MIRACLRetrievalHardNegatives`` (v1: reduced corpus, not comparable to
  full-corpus numbers) are used; ``.v2`` files (1-3 languages, one broken run) are left out. Where a
  model has the same task and language at HEAD and in a removed file, the HEAD file wins.
- ``mteb_tatoeba.csv`` (shipped in ``reports/reference``): per-language Tatoeba bitext-mining F1 and
  accuracy of multilingual-e5-{small,base,large} and e5-mistral-7b-instruct from the same MTEB
  results commit (0-1 there; percent here).

Output: one tidy frame, one row per (reference, language, metric), with the columns of
:data:`REFERENCE_COLUMNS`. Every number carries what makes it comparable: ``corpus`` (full /
hard negatives v1 / Tatoeba), ``split``, ``metric`` and ``regime`` (what the system was trained on,
e.g. MIRACL train); ``provenance`` says in words where the number comes from. A gap is computed only
against a reference with the same corpus and metric (see :func:`corpus_variant`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from workbench.errors import WorkbenchError, first_line

PAPER_CSV = "miracl_reference.csv"
MTEB_CSV = "mteb_miracl_ndcg10.csv"
MTEB_REMOVED_CSV = "mteb_miracl_ndcg10_removed_at_head.csv"
MTEB_TATOEBA_CSV = "mteb_tatoeba.csv"
MTEB_PROVENANCE = Path("mteb_results") / "PROVENANCE.md"
# The MTEB results commit, where the reference folder has no mteb_results/ copy (reports/reference).
SHIPPED_PROVENANCE = "PROVENANCE.md"

REFERENCE_COLUMNS = ("reference", "kind", "model", "task", "corpus", "split", "regime", "language", "metric",
                     "value", "provenance")

# Corpus variants: numbers are comparable only within one variant.
FULL = "full corpus"
HARD_NEGATIVES_V1 = "hard negatives v1"
HARD_NEGATIVES_V2 = "hard negatives v2"
SUBSET = "subset"
TATOEBA = "Tatoeba (LASER test pairs)"
OTHER_CORPUS = "the dataset's own corpus"  # XQuAD, BEIR folders: no published reference is joined to them

# Training regimes, in words. MIRACL train is in the fine-tuning data of e5-mistral (paper appendix;
# mteb lists MIRACL among its training datasets), of multilingual-e5 (mE5 technical report,
# arXiv 2402.05672) and of bge-m3 (arXiv 2402.03216), so their MIRACL numbers are not zero-shot.
TRAINED_ON_MIRACL = "trained on MIRACL train (supervised)"
ZERO_SHOT = "zero-shot (no MIRACL training data)"
NO_TRAINING = "no training (lexical)"
SYNTHETIC_ONLY = "synthetic training data only"
_MIRACL_REGIME = {
    "e5-mistral-7b-instruct": TRAINED_ON_MIRACL, "multilingual-e5-large": TRAINED_ON_MIRACL,
    "multilingual-e5-base": TRAINED_ON_MIRACL, "multilingual-e5-small": TRAINED_ON_MIRACL,
    "bge-m3": TRAINED_ON_MIRACL, "bge-m3-dense": TRAINED_ON_MIRACL, "bm25": NO_TRAINING,
    "all-MiniLM-L6-v2": ZERO_SHOT, "paraphrase-multilingual-MiniLM-L12-v2": ZERO_SHOT,
}
# Tatoeba itself is in no published training set of these models, but they saw parallel text:
# mE5's weakly supervised pre-training includes bitext (NLLB, CCMatrix), e5-mistral's synthetic
# data has a bitext family. Say so beside every published Tatoeba number.
TATOEBA_REGIME = "not trained on Tatoeba, but trained on parallel (bitext) data"

# The synthetic-only anchor: no MIRACL training data, like a model trained on this workbench's data.
SWIM_X = {
    "reference": "SWIM-X (published, synthetic only)", "kind": "paper", "model": "SWIM-X",
    "task": "MIRACL dev", "corpus": FULL, "split": "dev", "regime": SYNTHETIC_ONLY, "language": "avg18",
    "metric": "ndcg_at_10", "value": 46.4,
    "provenance": ("published in Thakur et al. 2024, 'Leveraging LLMs for Synthesizing Training Data Across "
                   "Many Languages in Multilingual Dense Retrieval' (SWIM-IR / SWIM-X, arXiv 2311.05800): "
                   "nDCG@10 averaged over MIRACL's 18 languages, dev, full corpus, trained on synthetic data only"),
}


def corpus_variant(task: str, dataset: str | None) -> str:
    """The corpus a measured number was taken on, from the eval stage's task and dataset labels.

    Datasets are labelled ``miracl-<lang>-<split>-{full,hardneg,subset...}``; the task name decides
    where the label says nothing (``MIRACLRetrievalHardNegatives.v2`` = v2).
    """
    name = (dataset or "").lower()
    if "subset" in name:
        return SUBSET
    if is_bitext_task(task):
        return TATOEBA if "tatoeba" in (task + name).lower() else OTHER_CORPUS
    if task.startswith("MIRACLRetrievalHardNegatives") or "hardneg" in name:
        return HARD_NEGATIVES_V2 if task.endswith(".v2") or name.endswith("v2") else HARD_NEGATIVES_V1
    if task == "MIRACLRetrieval" or name.endswith("-full"):
        return FULL
    return OTHER_CORPUS


def is_bitext_task(task: str) -> bool:
    """Tatoeba / bitext-mining tasks, whatever the eval stage calls them (Tatoeba, TatoebaBitextMining...)."""
    lowered = task.lower()
    return "tatoeba" in lowered or "bitext" in lowered

# Words for each source key of miracl_reference.csv.
PAPER_SOURCES: dict[str, str] = {
    "bge-m3-paper-table1": (
        "published in Chen et al. 2024, 'BGE M3-Embedding' (arXiv 2402.03216), Table 1: "
        "MIRACL dev, full corpus, evaluated by the BGE-M3 authors"
    ),
    "e5-mistral-paper": (
        "published in Wang et al. 2024, 'Improving Text Embeddings with Large Language Models' "
        "(arXiv 2401.00368): MIRACL dev, full corpus"
    ),
}
# Display names of the published systems (the 'system' column of miracl_reference.csv).
PAPER_LABELS: dict[str, str] = {
    "e5-mistral-7b-instruct": "e5-mistral-7b-instruct (published)",
    "multilingual-e5-large": "multilingual-e5-large (published)",
    "bm25": "BM25 Lucene (published)",
    "bge-m3-dense": "bge-m3 dense (published)",
}
MTEB_TASK_WORDS: dict[str, str] = {
    "MIRACLRetrieval": "MIRACLRetrieval = dev queries over the full per-language corpus",
    "MIRACLRetrievalHardNegatives": (
        "MIRACLRetrievalHardNegatives (v1, no query prompt in mteb) = a reduced corpus pooled from top-250 "
        "BM25/mE5-large/e5-mistral passages; not comparable to full-corpus numbers (for e5-mistral they are "
        "lower: 5.3 points on average over the 18 languages in these files, 2.3 for en to 9.0 for ja)"
    ),
}
MTEB_TASK_SHORT = {"MIRACLRetrieval": "MTEB full corpus", "MIRACLRetrievalHardNegatives": "MTEB hard negatives v1"}
MTEB_TASK_CORPUS = {"MIRACLRetrieval": FULL, "MIRACLRetrievalHardNegatives": HARD_NEGATIVES_V1}



def is_bm25(system: str) -> bool:
    """A BM25 baseline, by the results table's naming (``bm25``, ``bm25s``, ``BM25 Lucene (published)``)."""
    return system.lower().startswith("bm25")

@dataclass(frozen=True)
class References:
    """Per-language reference points and the published cross-language averages."""

    directory: Path
    per_language: pl.DataFrame  # columns REFERENCE_COLUMNS
    averages: pl.DataFrame  # reference, language (avg16/avg18), metric, value, provenance
    tatoeba: pl.DataFrame  # columns REFERENCE_COLUMNS, published MTEB Tatoeba per language (may be empty)


def reference_dir(configured: str | Path | None = None) -> Path:
    """The folder that holds miracl_reference.csv: config, $WORKBENCH_REFERENCE_DIR, ../shared, reports/reference."""
    candidates: list[Path] = []
    if configured:
        candidates.append(Path(configured))
    elif os.environ.get("WORKBENCH_REFERENCE_DIR"):
        candidates.append(Path(os.environ["WORKBENCH_REFERENCE_DIR"]))
    else:
        repo = Path(__file__).resolve().parent.parent.parent
        candidates += [
            repo.parent / "shared" / "data" / "reference",
            Path.cwd().parent / "shared" / "data" / "reference",
            _shipped_dir(),  # the copy shipped for machines without ../shared
        ]
    for path in candidates:
        if (path / PAPER_CSV).is_file():
            return path
    raise WorkbenchError(
        f"no {PAPER_CSV} found",
        where=str(candidates[0]),
        fix="set [report] reference_dir or $WORKBENCH_REFERENCE_DIR to the folder with the reference CSVs",
    )


def _schema() -> dict:
    return {c: (pl.Float64 if c == "value" else pl.Utf8) for c in REFERENCE_COLUMNS}


def load_references(directory: Path) -> References:
    paper, averages = _paper_rows(directory)
    mteb = _mteb_rows(directory)
    frame = pl.concat([paper, mteb], how="vertical") if mteb.height else paper
    averages = pl.concat([averages, pl.DataFrame([SWIM_X], schema=_schema())])
    return References(directory=directory, per_language=frame, averages=averages, tatoeba=_tatoeba_rows(directory))


def _shipped_dir() -> Path:
    return Path(__file__).resolve().parent.parent.parent / "reports" / "reference"


def _tatoeba_rows(directory: Path) -> pl.DataFrame:
    """Published MTEB Tatoeba F1/accuracy (the reference folder's copy, else the one shipped in reports/reference)."""
    path = next((p for p in (directory / MTEB_TATOEBA_CSV, _shipped_dir() / MTEB_TATOEBA_CSV) if p.is_file()), None)
    if path is None:
        return pl.DataFrame(schema=_schema())
    df = _read_csv(path, ("model", "task", "revision", "mteb_version", "hf_subset", "language", "split", "f1", "accuracy"))
    commit = _mteb_commit(path.parent)
    rows = []
    for rec in df.iter_rows(named=True):
        folder = rec["model"].replace("/", "__")
        words = (f"MTEB results repository (commit {commit[:12]}), file {folder}/{rec['revision']}/{rec['task']}.json, "
                 f"mteb {rec['mteb_version']}, subset {rec['hf_subset']} ({rec['split']} split); converted from 0-1 "
                 f"to percent; {TATOEBA_REGIME}")
        for metric in ("f1", "accuracy"):
            rows.append({"reference": f"{rec['model'].split('/')[-1]} (MTEB)", "kind": "mteb", "model": rec["model"],
                         "task": rec["task"], "corpus": TATOEBA, "split": rec["split"], "regime": TATOEBA_REGIME,
                         "language": rec["language"], "metric": metric, "value": round(float(rec[metric]) * 100, 3),
                         "provenance": words})
    return pl.DataFrame(rows, schema=_schema())


def _read_csv(path: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    try:
        df = pl.read_csv(path, infer_schema_length=0)
    except FileNotFoundError:
        raise WorkbenchError("reference file not found", where=str(path)) from None
    except pl.exceptions.PolarsError as err:
        raise WorkbenchError(f"cannot read CSV ({first_line(err)})", where=str(path)) from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise WorkbenchError(f"missing column(s) {', '.join(missing)}", where=str(path))
    return df


def _paper_rows(directory: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    path = directory / PAPER_CSV
    df = _read_csv(path, ("system", "source", "language", "metric", "value"))
    rows, averages = [], []
    for line, rec in enumerate(df.iter_rows(named=True), start=2):
        if rec["source"] not in PAPER_SOURCES:
            raise WorkbenchError(
                f"line {line}: unknown source '{rec['source']}'",
                where=f"{path}: field 'source'",
                fix=f"use one of {', '.join(PAPER_SOURCES)} or describe the new source in references.py",
            )
        try:
            value = float(rec["value"])
        except (TypeError, ValueError):
            raise WorkbenchError(f"line {line}: value '{rec['value']}' is not a number", where=f"{path}: field 'value'") from None
        label = PAPER_LABELS.get(rec["system"], f"{rec['system']} (published)")
        provenance = PAPER_SOURCES[rec["source"]]
        if rec["system"] == "bm25":
            provenance += " (BM25 = the pyserini/Lucene baseline)"
        entry = {
            "reference": label,
            "kind": "paper",
            "model": rec["system"],
            "task": "MIRACL dev",
            "corpus": FULL,
            "split": "dev",
            "regime": _MIRACL_REGIME.get(rec["system"], "training data not stated"),
            "language": rec["language"],
            "metric": rec["metric"],
            "value": value,
            "provenance": provenance,
        }
        (averages if rec["language"].startswith("avg") else rows).append(entry)
    return pl.DataFrame(rows, schema=_schema()), pl.DataFrame(averages, schema=_schema())


def _mteb_commit(directory: Path) -> str:
    """The MTEB results commit the files were copied from: mteb_results/PROVENANCE.md (../shared), else the
    folder's own PROVENANCE.md (reports/reference), else the shipped one."""
    for path in (directory / MTEB_PROVENANCE, directory / SHIPPED_PROVENANCE, _shipped_dir() / SHIPPED_PROVENANCE):
        if path.is_file():
            found = re.search(r"[Cc]ommit[^`\n]*`([0-9a-f]{40})`", path.read_text(encoding="utf-8"))
            if found:
                return found.group(1)
    return "unknown commit"


def _mteb_rows(directory: Path) -> pl.DataFrame:
    columns = ("model", "task", "revision", "mteb_version", "language", "split", "ndcg_at_10", "recall_at_100")
    schema = _schema()
    frames = []
    for name, at_head in ((MTEB_CSV, True), (MTEB_REMOVED_CSV, False)):
        path = directory / name
        if path.is_file():
            frames.append(_read_csv(path, columns).with_columns(pl.lit(at_head).alias("at_head")))
    if not frames:
        return pl.DataFrame(schema=schema)
    commit = _mteb_commit(directory)
    df = (
        pl.concat(frames)
        .filter(pl.col("task").is_in(list(MTEB_TASK_WORDS)) & (pl.col("split") == "dev"))
        .sort(["model", "task", "language", "at_head"], descending=[False, False, False, True])
        .unique(["model", "task", "language"], keep="first", maintain_order=True)
    )
    rows = []
    for rec in df.iter_rows(named=True):
        folder = rec["model"].replace("/", "__")
        place = ("" if rec["at_head"] else "_removed_at_head/") + f"{folder}/{rec['revision']}/{rec['task']}.json"
        words = (
            f"MTEB results repository (commit {commit[:12]}), file {place}, mteb {rec['mteb_version']}; "
            f"{MTEB_TASK_WORDS[rec['task']]}; converted from 0-1 to percent"
        )
        short = rec["model"].split("/")[-1]
        for metric in ("ndcg_at_10", "recall_at_100"):
            if rec[metric] in (None, ""):
                continue
            rows.append({
                "reference": f"{short} ({MTEB_TASK_SHORT[rec['task']]})",
                "kind": "mteb",
                "model": rec["model"],
                "task": rec["task"],
                "corpus": MTEB_TASK_CORPUS[rec["task"]],
                "split": rec["split"],
                "regime": _MIRACL_REGIME.get(short, "training data not stated"),
                "language": rec["language"],
                "metric": metric,
                "value": round(float(rec[metric]) * 100, 3),
                "provenance": words,
            })
    return pl.DataFrame(rows, schema=schema)
