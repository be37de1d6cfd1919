"""Published reference points for MIRACL (dev split), each with its source in words.

Reads, from the reference folder (``../shared/data/reference`` next to a checkout, or
``$WORKBENCH_REFERENCE_DIR``, or ``[report] reference_dir``):

- ``miracl_reference.csv`` (system, source, language, metric, value in percent): numbers
  transcribed from the BGE-M3 paper (Table 1: nDCG@10 of e5-mistral-7b-instruct,
  multilingual-e5-large and Lucene BM25 on all 18 languages) and the E5-mistral paper (Recall@100).
  Rows whose language is an average (``avg16``, ``avg18``) are kept apart as published averages.
- ``mteb_miracl_ndcg10.csv`` and ``mteb_miracl_ndcg10_removed_at_head.csv``: per-language results
  from the MTEB results repository (0-1 scale there; converted to percent here). ``MIRACLRetrieval``
  (full corpus) and ``MIRACLRetrievalHardNegatives`` (reduced corpus, not comparable to full-corpus
  numbers) are used; ``.v2`` files (1-3 languages, one broken run) are left out. Where a model has
  the same task and language at HEAD and in a removed file, the HEAD file wins.

Output: one tidy frame, one row per (reference, language, metric), with the columns of
:data:`REFERENCE_COLUMNS`; ``provenance`` says in words where the number comes from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from workbench.errors import WorkbenchError

PAPER_CSV = "miracl_reference.csv"
MTEB_CSV = "mteb_miracl_ndcg10.csv"
MTEB_REMOVED_CSV = "mteb_miracl_ndcg10_removed_at_head.csv"
MTEB_PROVENANCE = Path("mteb_results") / "PROVENANCE.md"

REFERENCE_COLUMNS = ("reference", "kind", "model", "task", "language", "metric", "value", "provenance")

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
        "MIRACLRetrievalHardNegatives = a reduced corpus pooled from top-250 BM25/mE5-large/e5-mistral "
        "passages (not comparable to full-corpus numbers; usually a little higher)"
    ),
}
MTEB_TASK_SHORT = {"MIRACLRetrieval": "MTEB full corpus", "MIRACLRetrievalHardNegatives": "MTEB hard negatives"}


@dataclass(frozen=True)
class References:
    """Per-language reference points and the published cross-language averages."""

    directory: Path
    per_language: pl.DataFrame  # columns REFERENCE_COLUMNS
    averages: pl.DataFrame  # reference, language (avg16/avg18), metric, value, provenance


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
            repo / "reports" / "reference",  # the copy shipped for machines without ../shared
        ]
    for path in candidates:
        if (path / PAPER_CSV).is_file():
            return path
    raise WorkbenchError(
        f"no {PAPER_CSV} found",
        where=str(candidates[0]),
        fix="set [report] reference_dir or $WORKBENCH_REFERENCE_DIR to the folder with the reference CSVs",
    )


def load_references(directory: Path) -> References:
    paper, averages = _paper_rows(directory)
    mteb = _mteb_rows(directory)
    frame = pl.concat([paper, mteb], how="vertical") if mteb.height else paper
    return References(directory=directory, per_language=frame, averages=averages)


def _read_csv(path: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    try:
        df = pl.read_csv(path, infer_schema_length=0)
    except FileNotFoundError:
        raise WorkbenchError("reference file not found", where=str(path)) from None
    except pl.exceptions.PolarsError as err:
        raise WorkbenchError(f"cannot read CSV ({str(err).splitlines()[0]})", where=str(path)) from None
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
            "language": rec["language"],
            "metric": rec["metric"],
            "value": value,
            "provenance": provenance,
        }
        (averages if rec["language"].startswith("avg") else rows).append(entry)
    schema = {c: (pl.Float64 if c == "value" else pl.Utf8) for c in REFERENCE_COLUMNS}
    return pl.DataFrame(rows, schema=schema), pl.DataFrame(averages, schema=schema)


def _mteb_commit(directory: Path) -> str:
    path = directory / MTEB_PROVENANCE
    if path.is_file():
        found = re.search(r"Commit \(snapshot HEAD\): `([0-9a-f]{7,40})`", path.read_text(encoding="utf-8"))
        if found:
            return found.group(1)
    return "unknown commit"


def _mteb_rows(directory: Path) -> pl.DataFrame:
    columns = ("model", "task", "revision", "mteb_version", "language", "split", "ndcg_at_10", "recall_at_100")
    schema = {c: (pl.Float64 if c == "value" else pl.Utf8) for c in REFERENCE_COLUMNS}
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
                "language": rec["language"],
                "metric": metric,
                "value": round(float(rec[metric]) * 100, 3),
                "provenance": words,
            })
    return pl.DataFrame(rows, schema=schema)
