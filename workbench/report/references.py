"""Published reference points for MIRACL (dev split) and Tatoeba, each with its source in words and the
conditions it was measured under, as columns (:mod:`workbench.conditions`).

The reference folder is the repository's ``reports/reference`` unless ``[report] reference_dir`` or
``$WORKBENCH_REFERENCE_DIR`` names another; the report names the folder it used. It holds:

- ``miracl_reference_v2.csv`` (system, source, language, metric, value in percent): numbers
  transcribed from the BGE-M3 paper (its current Table 2 and its earlier Table 1), the MIRACL paper
  (Lucene BM25) and the E5-mistral paper (Recall@100). Rows whose language is an average (``avg16``,
  ``avg18``) are kept apart as published averages.
- ``sources.toml``: what each source and system label means (citation, paper version, the
  instruction a system ran with where stated) and which references the report's per-language table
  shows, in which order (``report_column``); the shipped copy is used when the folder has none.
  A source or system the file does not describe is a data error naming the CSV and its row.
- ``mteb_miracl_ndcg10.csv`` and ``mteb_miracl_ndcg10_removed_at_head.csv``: per-language results
  from the MTEB results repository (0-1 scale there; percent here). ``MIRACLRetrieval`` (full
  corpus, MIRACL's instruction as task prompt) and ``MIRACLRetrievalHardNegatives`` (v1: reduced
  corpus, no task prompt, so instruction models ran with mteb's default prompt) are used; ``.v2``
  files (1-3 languages, one broken run) are left out. Where a model has the same task and language
  at HEAD and in a removed file, the HEAD file wins.
- ``mteb_tatoeba.csv`` (shipped in ``reports/reference``): per-language Tatoeba bitext-mining F1 and
  accuracy of multilingual-e5-{small,base,large} and e5-mistral-7b-instruct (0-1 there; percent here).

Output: one tidy frame per kind, one row per (reference, source, language, metric), with the columns
of :data:`REFERENCE_COLUMNS`. Numbers of one model, corpus, split, language and metric from two
sources that differ by more than :data:`DISPUTE_POINTS` are ``disputed`` (both stay, each with its
source); within that, one row per reference label is ``shown`` (the preferred source), the other
named in ``other_sources``.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from workbench import conditions
from workbench.errors import WorkbenchError, first_line
from workbench.metrics import ACCURACY, F1, NDCG_AT_10, RECALL_AT_100
from workbench.resources import REPO_ROOT, shipped_dir

PAPER_CSV = "miracl_reference_v2.csv"
SOURCES_TOML = "sources.toml"
MTEB_CSV = "mteb_miracl_ndcg10.csv"
MTEB_REMOVED_CSV = "mteb_miracl_ndcg10_removed_at_head.csv"
MTEB_TATOEBA_CSV = "mteb_tatoeba.csv"
# the metrics the MTEB CSVs hold, one column each (0-1 there)
MTEB_MIRACL_METRICS = (NDCG_AT_10, RECALL_AT_100)
MTEB_TATOEBA_METRICS = (F1, ACCURACY)
MTEB_PROVENANCE = Path("mteb_results") / "PROVENANCE.md"
# The MTEB results commit, where the reference folder has no mteb_results/ copy (reports/reference).
SHIPPED_PROVENANCE = "PROVENANCE.md"
# Two published numbers for the same thing that differ by more than this (points) are disputed.
DISPUTE_POINTS = 1.0

REFERENCE_COLUMNS = ("reference", "kind", "model", "source", "version", "task", "benchmark", "task_kind", "corpus",
                     "split", "revision", "instruction", "max_length", "regime", "language", "metric", "value",
                     "provenance", "disputed", "shown", "other_sources")
_TYPES = {"value": pl.Float64, "max_length": pl.Int64, "disputed": pl.Boolean, "shown": pl.Boolean}

MIRACL_RELEASE = "MIRACL v1.0"
MTEB_TASK_WORDS: dict[str, str] = {
    "MIRACLRetrieval": "MIRACLRetrieval = dev queries over the full per-language corpus, MIRACL's instruction as task prompt",
    "MIRACLRetrievalHardNegatives": (
        "MIRACLRetrievalHardNegatives (v1: no task prompt, so instruction models ran with mteb's default prompt) = a "
        "reduced corpus pooled from top-250 BM25/mE5-large/e5-mistral passages; not comparable to full-corpus numbers "
        "(for e5-mistral they are lower: 5.2 points on average over the 17 languages other than the disputed yo, 2.3 for "
        "en to 9.0 for ja, and its queries ran with another prompt)"
    ),
}
MTEB_TASK_SHORT = {"MIRACLRetrieval": "MTEB full corpus", "MIRACLRetrievalHardNegatives": "MTEB hard negatives v1"}
MTEB_TASK_CORPUS = {"MIRACLRetrieval": conditions.FULL, "MIRACLRetrievalHardNegatives": conditions.HARD_NEGATIVES_V1}
# Tatoeba itself is in no published training set of these models, but they saw parallel text:
# mE5's weakly supervised pre-training includes bitext (NLLB, CCMatrix), e5-mistral's synthetic
# data has a bitext family. Said beside every published Tatoeba number.
TATOEBA_CAVEAT = "not trained on Tatoeba, but trained on parallel (bitext) data"

# The synthetic-only anchor: no MIRACL training data, like a model trained on this workbench's data.
SWIM_X = {
    "reference": "SWIM-X (published, synthetic only)", "kind": "paper", "model": "SWIM-X", "source": "swim-x-paper",
    "version": "arXiv 2311.05800", "task": "MIRACL dev", "benchmark": "miracl", "task_kind": conditions.RETRIEVAL,
    "corpus": conditions.FULL, "split": "dev", "revision": MIRACL_RELEASE, "instruction": conditions.NOT_STATED,
    "max_length": None, "regime": "synthetic training data only", "language": "avg18", "metric": NDCG_AT_10,
    "value": 46.4, "disputed": False, "shown": True, "other_sources": None,
    "provenance": ("published in Thakur et al. 2024, 'Leveraging LLMs for Synthesizing Training Data Across "
                   "Many Languages in Multilingual Dense Retrieval' (SWIM-IR / SWIM-X, arXiv 2311.05800): "
                   "nDCG@10 averaged over MIRACL's 18 languages, dev, full corpus, trained on synthetic data only"),
}


@dataclass(frozen=True)
class References:
    """Per-language reference points and the published cross-language averages."""

    directory: Path
    per_language: pl.DataFrame  # columns REFERENCE_COLUMNS
    averages: pl.DataFrame  # the same columns, language avg16 / avg18
    tatoeba: pl.DataFrame  # the same columns, published MTEB Tatoeba per language (may be empty)
    # the reference labels the report's per-language table shows beside the model, in this order
    # (sources.toml ``report_column``); "auto" prefers the earlier of two equally comparable references
    report_columns: tuple[str, ...] = ()


def _shipped_dir() -> Path:
    """The reference folder the repository ships (a checkout's, else an installed wheel's copy)."""
    found = shipped_dir("reports/reference")
    return found if found is not None else REPO_ROOT / "reports" / "reference"


def reference_dir(configured: str | Path | None = None) -> Path:
    """The reference folder: ``[report] reference_dir``, else ``$WORKBENCH_REFERENCE_DIR``, else the
    repository's ``reports/reference`` (the shipped copy wins unless asked)."""
    if configured:
        path, where = Path(configured), "[report] reference_dir"
    elif os.environ.get("WORKBENCH_REFERENCE_DIR"):
        path, where = Path(os.environ["WORKBENCH_REFERENCE_DIR"]), "$WORKBENCH_REFERENCE_DIR"
    else:
        path, where = _shipped_dir(), "the shipped reference folder"
    if not (path / PAPER_CSV).is_file():
        raise WorkbenchError(
            f"no {PAPER_CSV} in {path} (named by {where})",
            where=str(path / PAPER_CSV),
            fix="point [report] reference_dir or $WORKBENCH_REFERENCE_DIR at a folder holding the reference CSVs "
                "(the repository ships one in reports/reference)",
        )
    return path


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {c: _TYPES.get(c, pl.Utf8) for c in REFERENCE_COLUMNS}
    return pl.DataFrame(rows, schema=schema)


def load_references(directory: Path) -> References:
    described = _sources(directory)
    paper, averages = _paper_rows(directory, described)
    mteb = _mteb_rows(directory, described)
    frame = mark_disputes(pl.concat([paper, mteb], how="vertical"), described)
    averages = pl.concat([averages, _frame([SWIM_X])])
    return References(directory=directory, per_language=frame, averages=averages, tatoeba=_tatoeba_rows(directory),
                      report_columns=report_columns(described))


def _sources(directory: Path) -> dict[str, Any]:
    """sources.toml of the reference folder, else the shipped one."""
    path = next(p for p in (directory / SOURCES_TOML, _shipped_dir() / SOURCES_TOML) if p.is_file())
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise WorkbenchError(f"cannot read the reference descriptions ({first_line(err)})", where=str(path),
                             fix="fix the TOML syntax") from None
    for table in ("sources", "systems"):
        if not isinstance(data.get(table), dict):
            raise WorkbenchError(f"no [{table}.*] tables", where=str(path),
                                 fix="describe each source and system of the reference CSV (see reports/reference/sources.toml)")
    data["path"] = str(path)
    return data


def report_columns(described: dict[str, Any]) -> tuple[str, ...]:
    """The reference labels the report's per-language table shows beside the model, in sources.toml's
    order: ``report_column = N`` on a ``[systems.*]`` table makes that system's label the N-th column;
    ``report_column = { TASK = N }`` on an ``[mteb_models.*]`` table does so for that model's numbers
    on the MTEB task TASK. Positions need not be consecutive, only distinct."""
    path = described["path"]
    placed: dict[int, tuple[str, str]] = {}  # position -> (label, the table that asked for it)

    def place(position: Any, label: str, table: str) -> None:
        where = f"{path}: {table}, field 'report_column'"
        if not isinstance(position, int) or isinstance(position, bool) or position < 1:
            raise WorkbenchError(f"a column position must be a whole number from 1, not {position!r}", where=where,
                                 fix="give the reference's place among the table's reference columns (1, 2, ...)")
        if position in placed:
            raise WorkbenchError(f"position {position} is also given to {placed[position][1]}", where=where,
                                 fix="give each reference column its own position")
        placed[position] = (label, table)

    for key, system in described["systems"].items():
        if "report_column" in system:
            place(system["report_column"], _system_label(key, system), f"[systems.{key}]")
    for model, usage in described.get("mteb_models", {}).items():
        table = f'[mteb_models."{model}"]'
        tasks = usage.get("report_column", {})
        if not isinstance(tasks, dict):
            raise WorkbenchError(f"report_column must name an MTEB task, not {tasks!r}",
                                 where=f"{path}: {table}, field 'report_column'",
                                 fix="write report_column = { MIRACLRetrieval = N } (the task whose numbers are shown)")
        for task, position in tasks.items():
            if task not in MTEB_TASK_SHORT:
                raise WorkbenchError(f"unknown MTEB task '{task}'", where=f"{path}: {table}, field 'report_column'",
                                     fix=f"use one of {', '.join(MTEB_TASK_SHORT)}")
            place(position, _mteb_label(model, task, _mteb_instruction(described, model, task)), table)
    return tuple(placed[position][0] for position in sorted(placed))


def _system_label(key: str, system: dict[str, Any]) -> str:
    """How the report names a system of miracl_reference_v2.csv: its sources.toml label."""
    return system.get("label", f"{key} (published)")


def _mteb_label(model: str, task: str, instruction: str) -> str:
    """How the report names an MTEB model's numbers on one task: ``multilingual-e5-large (MTEB full corpus)``;
    an instruction model that ran with mteb's default prompt says so."""
    prompt = ", mteb default prompt" if instruction == conditions.MTEB_DEFAULT_PROMPT else ""
    return f"{model.split('/')[-1]} ({MTEB_TASK_SHORT[task]}{prompt})"


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


def _paper_rows(directory: Path, described: dict[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame]:
    path = directory / PAPER_CSV
    df = _read_csv(path, ("system", "source", "language", "metric", "value"))
    sources, systems = described["sources"], described["systems"]
    rows, averages = [], []
    for line, rec in enumerate(df.iter_rows(named=True), start=2):
        where = f"{path}: row {line - 1} (line {line})"
        if rec["source"] not in sources:
            raise WorkbenchError(
                f"unknown source '{rec['source']}'", where=f"{where}, field 'source'",
                fix=f"use one of {', '.join(sources)}, or describe the source in {described['path']} "
                    f"([sources.{rec['source']}] citation, version)")
        if rec["system"] not in systems:
            raise WorkbenchError(
                f"unknown system '{rec['system']}'", where=f"{where}, field 'system'",
                fix=f"use one of {', '.join(systems)}, or describe the system in {described['path']} "
                    f"([systems.{rec['system']}] label, model)")
        try:
            value = float(rec["value"])
        except (TypeError, ValueError):
            raise WorkbenchError(f"value '{rec['value']}' is not a number", where=f"{where}, field 'value'") from None
        source, system = sources[rec["source"]], systems[rec["system"]]
        lexical = bool(system.get("lexical"))
        instruction = conditions.NO_INSTRUCTION if lexical else system.get("instruction", conditions.NOT_STATED)
        language = rec["language"]
        entry = {
            "reference": _system_label(rec["system"], system), "kind": "paper",
            "model": system.get("model", rec["system"]), "source": rec["source"], "version": source.get("version"),
            "task": "MIRACL dev", "benchmark": "miracl", "task_kind": conditions.RETRIEVAL, "corpus": conditions.FULL,
            "split": "dev", "revision": MIRACL_RELEASE, "instruction": instruction,
            "max_length": system.get("max_length"),
            "regime": conditions.regime(system.get("model", rec["system"]), "miracl", language, lexical=lexical),
            "language": language, "metric": rec["metric"], "value": value,
            "provenance": f"published in {source.get('citation', rec['source'])}",
            "disputed": False, "shown": True, "other_sources": None,
        }
        (averages if language.startswith("avg") else rows).append(entry)
    return _frame(rows), _frame(averages)


def _mteb_commit(directory: Path) -> str:
    """The MTEB results commit the files were copied from: mteb_results/PROVENANCE.md (../shared), else the
    folder's own PROVENANCE.md (reports/reference), else the shipped one."""
    for path in (directory / MTEB_PROVENANCE, directory / SHIPPED_PROVENANCE, _shipped_dir() / SHIPPED_PROVENANCE):
        if path.is_file():
            found = re.search(r"[Cc]ommit[^`\n]*`([0-9a-f]{40})`", path.read_text(encoding="utf-8"))
            if found:
                return found.group(1)
    return "unknown commit"


def _mteb_instruction(described: dict[str, Any], model: str, task: str) -> str:
    """The instruction mteb ran ``model``'s queries with on ``task`` (sources.toml [mteb_models])."""
    usage = described.get("mteb_models", {}).get(model)
    if not usage:
        return conditions.NOT_STATED
    if usage.get("uses") == "none":
        return conditions.NO_INSTRUCTION
    if usage.get("uses") == "prefix":
        return conditions.prefix(usage.get("prefix", ""))
    # an instruction model: the task's own prompt where it has one, mteb's default where it has none
    return conditions.MIRACL_INSTRUCTION if task == "MIRACLRetrieval" else conditions.MTEB_DEFAULT_PROMPT


def _mteb_rows(directory: Path, described: dict[str, Any]) -> pl.DataFrame:
    columns = ("model", "task", "revision", "mteb_version", "language", "split", *MTEB_MIRACL_METRICS)
    frames = []
    for name, at_head in ((MTEB_CSV, True), (MTEB_REMOVED_CSV, False)):
        path = directory / name
        if path.is_file():
            frames.append(_read_csv(path, columns).with_columns(pl.lit(at_head).alias("at_head")))
    if not frames:
        return _frame([])
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
        instruction = _mteb_instruction(described, rec["model"], rec["task"])
        label = _mteb_label(rec["model"], rec["task"], instruction)
        for metric in MTEB_MIRACL_METRICS:
            if rec[metric] in (None, ""):
                continue
            rows.append({
                "reference": label, "kind": "mteb", "model": rec["model"], "source": f"mteb-results-{commit[:12]}",
                "version": f"mteb {rec['mteb_version']}", "task": rec["task"], "benchmark": "miracl",
                "task_kind": conditions.RETRIEVAL, "corpus": MTEB_TASK_CORPUS[rec["task"]], "split": rec["split"],
                "revision": MIRACL_RELEASE, "instruction": instruction, "max_length": None,
                "regime": conditions.regime(rec["model"], "miracl", rec["language"]), "language": rec["language"],
                "metric": metric, "value": round(float(rec[metric]) * 100, 3), "provenance": words,
                "disputed": False, "shown": True, "other_sources": None,
            })
    return _frame(rows)


def mark_disputes(frame: pl.DataFrame, described: dict[str, Any]) -> pl.DataFrame:
    """Mark numbers of one model, corpus, split, language and metric whose sources differ by more than
    DISPUTE_POINTS (``disputed``), and keep one ``shown`` row per reference label: the preferred source
    (sources.toml ``priority``), the others named in ``other_sources``."""
    if frame.height == 0:
        return frame
    priority = {k: int(v.get("priority", 9)) for k, v in described["sources"].items()}
    key = ["model", "corpus", "split", "language", "metric"]
    spread = frame.group_by(key).agg((pl.col("value").max() - pl.col("value").min()).alias("_spread"))
    frame = frame.drop("disputed").join(spread, on=key, how="left").with_columns(
        (pl.col("_spread") > DISPUTE_POINTS).alias("disputed")).drop("_spread")
    frame = frame.with_columns(pl.col("source").replace_strict(priority, default=9, return_dtype=pl.Int64).alias("_p"))
    frame = frame.sort("_p", maintain_order=True)
    others = frame.group_by(key).agg(
        pl.struct("reference", "source", "version", "value").alias("_all"))
    frame = frame.join(others, on=key, how="left")
    rows = []
    seen: set[tuple] = set()
    for rec in frame.iter_rows(named=True):
        label_key = (rec["reference"], *(rec[k] for k in key))
        rec["shown"] = label_key not in seen
        seen.add(label_key)
        rest = [o for o in rec["_all"] if (o["source"], o["reference"]) != (rec["source"], rec["reference"])]
        rec["other_sources"] = "; ".join(f"{o['value']:.1f} ({o['reference']}, {o['version']})" for o in rest) or None
        rows.append(rec)
    return _frame([{c: r[c] for c in REFERENCE_COLUMNS} for r in rows])


def _tatoeba_rows(directory: Path) -> pl.DataFrame:
    """Published MTEB Tatoeba F1/accuracy (the reference folder's copy, else the one shipped in reports/reference)."""
    path = next((p for p in (directory / MTEB_TATOEBA_CSV, _shipped_dir() / MTEB_TATOEBA_CSV) if p.is_file()), None)
    if path is None:
        return _frame([])
    df = _read_csv(path, ("model", "task", "revision", "mteb_version", "hf_subset", "language", "split", *MTEB_TATOEBA_METRICS))
    commit = _mteb_commit(path.parent)
    described = _sources(path.parent)
    rows = []
    for rec in df.iter_rows(named=True):
        folder = rec["model"].replace("/", "__")
        words = (f"MTEB results repository (commit {commit[:12]}), file {folder}/{rec['revision']}/{rec['task']}.json, "
                 f"mteb {rec['mteb_version']}, subset {rec['hf_subset']} ({rec['split']} split); converted from 0-1 "
                 f"to percent; {TATOEBA_CAVEAT}")
        instruction = _mteb_instruction(described, rec["model"], rec["task"])
        for metric in MTEB_TATOEBA_METRICS:
            rows.append({"reference": f"{rec['model'].split('/')[-1]} (MTEB)", "kind": "mteb", "model": rec["model"],
                         "source": f"mteb-results-{commit[:12]}", "version": f"mteb {rec['mteb_version']}",
                         "task": rec["task"], "benchmark": "tatoeba", "task_kind": conditions.BITEXT,
                         "corpus": conditions.FULL, "split": rec["split"], "revision": rec["revision"],
                         "instruction": instruction, "max_length": None,
                         "regime": conditions.regime(rec["model"], "tatoeba", rec["language"]),
                         "language": rec["language"], "metric": metric, "value": round(float(rec[metric]) * 100, 3),
                         "provenance": words, "disputed": False, "shown": True, "other_sources": None})
    return _frame(rows)
