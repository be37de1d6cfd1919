"""Report stage: one HTML page per model answering "where is it behind, is it the low-resource
languages, and is the data to blame?".

Inputs (all Parquet with declared schemas):
- one or more ``eval/results.parquet`` tables (EVAL_RESULTS: system, model, task, dataset,
  language, split, metric, value in percent, n_queries, n_docs, source, created_at);
- optionally ``audit/summary.parquet`` (AUDIT_SUMMARY: language, generated, accepted,
  acceptance_rate, top_reject_reasons, top_lid_confusions, cost_usd, ...);
- the language registry (tiers, ``miracl_low_resource``) and the published reference points
  (:mod:`workbench.report.references`).

Outputs in ``out_dir``: ``index.html`` (self-contained: CSS inline, plots as base64 PNG),
``summary.md``, ``report.json`` (inputs with sha256, focus system, reference), and the tidy tables
``scores``, ``gaps``, ``groups``, ``data`` as both ``.parquet`` and ``.csv``
(schemas REPORT_SCORES, REPORT_GAPS, REPORT_GROUPS, REPORT_DATA in :mod:`workbench.tables`).

Gaps are ``reference - model`` in points of the metric: a positive gap means the model is behind.

Example::

    workbench report runs/demo                      # the run's eval/ and audit/ -> runs/demo/report/
    workbench report --results runs/bm25/eval/results.parquet --results runs/ft/eval/results.parquet \\
        --audit runs/ft/audit/summary.parquet --out reports/example
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from workbench.config import ReportSection
from workbench.errors import TableError, UnknownLanguageError, WorkbenchError
from workbench.languages import Registry, load_registry
from workbench.run import Run, StageResult, atomic_write_bytes, file_sha256, read_parquet
from workbench.tables import (
    AUDIT_SUMMARY,
    EVAL_RESULTS,
    REPORT_COMPARE,
    REPORT_COMPARISONS,
    REPORT_DATA,
    REPORT_GAPS,
    REPORT_GROUPS,
    REPORT_MEASURED,
    REPORT_SCORES,
    Schema,
    conform,
)
from workbench.report import measured as measured_mod
from workbench.report.references import (
    FULL,
    HARD_NEGATIVES_V1,
    ZERO_SHOT,
    References,
    corpus_variant,
    is_bitext_task,
    load_references,
    reference_dir,
)

log = logging.getLogger(__name__)

STAGE = "report"
METRICS = ("ndcg_at_10", "recall_at_100")
METRIC_LABELS = {"ndcg_at_10": "nDCG@10", "recall_at_100": "Recall@100", "f1": "F1", "accuracy": "accuracy"}
# mteb's bitext-mining scores (Tatoeba): fractions of sentence pairs, in percent like every EVAL_RESULTS value
_BITEXT_METRICS = ("f1", "accuracy", "precision", "recall")
# Metric names the report understands: mteb's spelling, e.g. ndcg_at_10, recall_at_100, mrr_at_10.
_METRIC_PREFIXES = ("ndcg_at_", "recall_at_", "map_at_", "mrr_at_", "precision_at_")
MEASURED_BM25 = "BM25 (measured here)"
# Reference columns shown beside the model in the per-language table (in this order).
SHOWN_REFERENCES = (
    "e5-mistral-7b-instruct (published)",
    "e5-mistral-7b-instruct (MTEB hard negatives v1)",
    "multilingual-e5-large (published)",
    "BM25 Lucene (published)",
    MEASURED_BM25,
)
_TIER_RANK = {"high": 0, "mid": 1, "low": 2}
GROUPS = ("high tier", "mid tier", "low tier", "MIRACL low-resource", "all MIRACL")


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def load_results(paths: Sequence[Path | str], registry: Registry) -> pl.DataFrame:
    """Read and check EVAL_RESULTS tables; adds ``input_file``. Errors name the file and the fix."""
    if not paths:
        raise WorkbenchError(
            "no results tables given",
            where="report inputs",
            fix="pass --results PATH (an eval/results.parquet) or a run directory that has eval/results.parquet",
        )
    miracl = {lang.code for lang in registry.miracl}
    frames: list[pl.DataFrame] = []
    for raw in paths:
        path = Path(raw)
        df = read_parquet(path, EVAL_RESULTS)
        if df.height == 0:
            raise TableError("results table is empty (0 rows)", where=str(path),
                             fix="run 'workbench eval' first, or leave this table out")
        nulls = [c for c in ("system", "task", "language", "metric", "value") if df[c].null_count()]
        if nulls:
            raise TableError(f"null values in column(s) {', '.join(nulls)}", where=str(path),
                             fix="every result row needs a system, task, language, metric and value")
        for code in df["language"].unique().sort().to_list():
            if code not in registry:
                raise UnknownLanguageError(
                    f"unknown language code '{code}' in column 'language'",
                    where=str(path),
                    fix="use a code from 'workbench languages' (e.g. yo, sw, zh)",
                )
        bad_miracl = df.filter(pl.col("task").str.starts_with("MIRACL") & ~pl.col("language").is_in(list(miracl)))
        if bad_miracl.height:
            code = bad_miracl["language"][0]
            raise UnknownLanguageError(
                f"'{code}' is not a MIRACL language but has {bad_miracl['task'][0]} results",
                where=f"{path}: column 'language'",
                fix=f"MIRACL languages are {', '.join(sorted(miracl))}",
            )
        for metric in df["metric"].unique().sort().to_list():
            retrieval = metric.startswith(_METRIC_PREFIXES) and metric.rsplit("_", 1)[-1].isdigit()
            if not retrieval and metric not in _BITEXT_METRICS:
                raise WorkbenchError(
                    f"mixed metrics: '{metric}' is not a metric name the report knows",
                    where=f"{path}: column 'metric'",
                    fix="use mteb's names, e.g. ndcg_at_10, recall_at_100 (retrieval) or f1, accuracy (bitext mining)",
                )
            values = df.filter(pl.col("metric") == metric)["value"]
            if values.min() < 0 or values.max() > 100:
                raise WorkbenchError(
                    f"mixed metrics: {metric} values range {values.min():g}..{values.max():g}, outside 0-100",
                    where=f"{path}: column 'value'", fix="EVAL_RESULTS values are percentages",
                )
            if _looks_fractional(values):
                raise WorkbenchError(
                    f"mixed metrics: every {metric} value is <= 1 ({values.max():g} at most): these look like "
                    "0-1 fractions, but EVAL_RESULTS holds percentages",
                    where=f"{path}: column 'value'", fix="multiply the values by 100",
                )
        frames.append(df.with_columns(pl.lit(str(path)).alias("input_file")))
    results = pl.concat(frames, how="vertical")
    key = ["system", "task", "dataset", "language", "split", "metric"]
    clash = results.group_by(key).agg(pl.col("value").n_unique().alias("n"), pl.col("input_file").unique()).filter(pl.col("n") > 1)
    if clash.height:
        rec = clash.row(0, named=True)
        raise WorkbenchError(
            f"conflicting values for system '{rec['system']}', {rec['task']} {rec['language']} {rec['metric']}",
            where=", ".join(sorted(rec["input_file"])),
            fix="give each run's results a distinct system name, or leave one table out",
        )
    models = results.group_by("system").agg(pl.col("model").n_unique().alias("n"), pl.col("model").unique()).filter(pl.col("n") > 1)
    if models.height:
        rec = models.row(0, named=True)
        raise WorkbenchError(
            f"system '{rec['system']}' names different models ({', '.join(sorted(map(str, rec['model'])))})",
            where="report inputs: column 'system'",
            fix="give each model its own system name when evaluating",
        )
    return results.unique(key, keep="first", maintain_order=True)


def _looks_fractional(values: pl.Series) -> bool:
    """Every value of a metric <= 1 (and not all zero) over two or more rows: a 0-1 scale table.

    A percent table can hold one value below 1 (an English-only model on Russian scores 0.4%),
    but not a whole column of them.
    """
    return values.len() >= 2 and 0 < values.max() <= 1.0


def load_audit(path: Path | str | None, registry: Registry) -> pl.DataFrame | None:
    if path is None:
        return None
    path = Path(path)
    df = read_parquet(path, AUDIT_SUMMARY)
    if df.height == 0:
        raise TableError("audit summary is empty (0 rows)", where=str(path),
                         fix="run 'workbench audit' after the filter stage, or leave --audit out")
    for code in df["language"].to_list():
        if code not in registry:
            raise UnknownLanguageError(f"unknown language code '{code}' in column 'language'", where=str(path),
                                       fix="use a code from 'workbench languages'")
    if df["language"].n_unique() != df.height:
        dup = df.group_by("language").len().filter(pl.col("len") > 1)["language"][0]
        raise TableError(f"language '{dup}' appears more than once", where=f"{path}: column 'language'")
    return df


# ---------------------------------------------------------------------------------------------
# analysis
# ---------------------------------------------------------------------------------------------
@dataclass
class Analysis:
    focus: str
    primary: str
    languages: list[dict]  # registry facts of the 18 MIRACL languages, in table order
    scores: pl.DataFrame
    gaps: pl.DataFrame
    groups: pl.DataFrame
    data: pl.DataFrame
    other: pl.DataFrame  # measured non-MIRACL rows (XQuAD, ...)
    references: References
    sources: list[dict] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    focus_corpus: str = FULL
    between: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _measured_words(rec: dict) -> str:
    if rec["source"] == "measured":
        when = (rec["created_at"] or "")[:10]
        size = []
        if rec["n_queries"] is not None:
            size.append(f"{rec['n_queries']:,} queries")
        if rec["n_docs"] is not None:
            size.append(f"{rec['n_docs']:,} passages")
        size_txt = f", {' over '.join(size)}" if size else ""
        return (
            f"measured here by the workbench: {rec['model']} on {rec['dataset']} ({rec['task']}, "
            f"{rec['split']} split{size_txt}){', ' + when if when else ''}; table {rec['input_file']}"
        )
    return f"not measured here: source given as '{rec['source']}' in {rec['input_file']}"


def _language_facts(registry: Registry) -> list[dict]:
    order = {"high": 0, "mid": 1, "low": 2}
    langs = sorted(registry.miracl, key=lambda l: (order[l.tier], l.code))
    return [
        {"code": l.code, "name": l.name, "tier": l.tier, "miracl_low_resource": l.miracl_low_resource,
         "eval_only": not l.generates}
        for l in langs
    ]


def _pick_focus(results: pl.DataFrame, wanted: str | None) -> str:
    systems = results["system"].unique(maintain_order=True).to_list()
    if wanted:
        if wanted not in systems:
            raise WorkbenchError(f"focus system '{wanted}' is not in the results", where="--focus",
                                 fix=f"choose one of {', '.join(systems)}")
        return wanted
    miracl_systems = results.filter(pl.col("task").str.starts_with("MIRACL"))["system"].unique(maintain_order=True).to_list()
    for pool in (miracl_systems, systems):
        candidates = [s for s in pool if not s.lower().startswith("bm25")]
        if candidates:
            return candidates[-1]
    return systems[-1]


def analyse(results: pl.DataFrame, audit: pl.DataFrame | None, refs: References, registry: Registry,
            config: ReportSection) -> Analysis:
    facts = _language_facts(registry)
    by_code = {f["code"]: f for f in facts}
    focus = _pick_focus(results, config.focus)
    focus_corpora = [corpus_variant(t, d) for t, d in results.filter(
        (pl.col("system") == focus) & pl.col("task").str.starts_with("MIRACL")).select("task", "dataset").iter_rows()]
    # the corpus most of the focus system's MIRACL numbers were taken on (full when it has none)
    focus_corpus = max(set(focus_corpora), key=focus_corpora.count) if focus_corpora else "no MIRACL measurement"
    primary = config.primary_reference
    if primary == "auto":
        primary = ("e5-mistral-7b-instruct (MTEB hard negatives v1)" if focus_corpus == HARD_NEGATIVES_V1
                   else "e5-mistral-7b-instruct (published)")

    # measured rows: for MIRACL, one per (system, language, metric): the largest corpus wins
    rows = []
    measured = results.sort("n_docs", descending=True, nulls_last=True)
    miracl_rows = measured.filter(pl.col("task").str.starts_with("MIRACL")).unique(
        ["system", "language", "metric"], keep="first", maintain_order=True)
    dropped = measured.filter(pl.col("task").str.starts_with("MIRACL")).height - miracl_rows.height
    notes = []
    if dropped:
        notes.append(f"{dropped} MIRACL result row(s) measured on a smaller corpus were left out of the gap "
                     "table where the same system, language and metric was measured on a larger one (all rows are in scores).")
    bm25_systems = [s for s in miracl_rows["system"].unique(maintain_order=True).to_list() if s.lower().startswith("bm25")]
    if len(bm25_systems) > 1:
        notes.append(f"several BM25 systems were measured ({', '.join(bm25_systems)}); '{MEASURED_BM25}' is {bm25_systems[0]}.")
    for rec in measured.iter_rows(named=True):
        fact = registry.get(rec["language"])
        rows.append({
            "language": rec["language"], "tier": fact.tier, "miracl_low_resource": fact.miracl_low_resource,
            "system": rec["system"], "kind": "measured", "model": rec["model"], "task": rec["task"],
            "dataset": rec["dataset"], "metric": rec["metric"], "value": rec["value"],
            "n_queries": rec["n_queries"], "n_docs": rec["n_docs"], "provenance": _measured_words(rec),
            "corpus": corpus_variant(rec["task"], rec["dataset"]), "split": rec["split"], "regime": None,
        })
    for rec in refs.per_language.iter_rows(named=True):
        if rec["language"] not in by_code:
            continue
        fact = by_code[rec["language"]]
        rows.append({
            "language": rec["language"], "tier": fact["tier"], "miracl_low_resource": fact["miracl_low_resource"],
            "system": rec["reference"], "kind": rec["kind"], "model": rec["model"], "task": rec["task"],
            "dataset": "MIRACL dev", "metric": rec["metric"], "value": rec["value"],
            "n_queries": None, "n_docs": None, "provenance": rec["provenance"],
            "corpus": rec["corpus"], "split": rec["split"], "regime": rec["regime"],
        })
    scores = conform(pl.DataFrame(rows, schema=REPORT_SCORES), REPORT_SCORES, where="report scores")

    # reference points per (language, metric): published + MTEB + BM25 measured here
    # like for like: a gap joins a system and a reference on language, metric AND corpus variant
    ref_points = scores.filter(pl.col("kind") != "measured").select(
        "language", "metric", "corpus", pl.col("system").alias("reference"), pl.col("kind").alias("reference_kind"),
        pl.col("value").alias("reference_value"), pl.col("regime").alias("reference_regime"))
    miracl_rows = miracl_rows.with_columns(
        pl.struct("task", "dataset").map_elements(lambda r: corpus_variant(r["task"], r["dataset"]),
                                                  return_dtype=pl.Utf8).alias("corpus"))
    if bm25_systems:
        bm25 = miracl_rows.filter(pl.col("system") == bm25_systems[0]).select(
            "language", "metric", "corpus", pl.lit(MEASURED_BM25).alias("reference"),
            pl.lit("measured").alias("reference_kind"), pl.col("value").alias("reference_value"),
            pl.lit("no training (lexical)").alias("reference_regime"))
        ref_points = pl.concat([ref_points, bm25])
    sys_points = miracl_rows.select("language", "metric", "corpus", "system", "value")
    gaps = sys_points.join(ref_points, on=["language", "metric", "corpus"], how="inner")
    if bm25_systems:
        gaps = gaps.filter(~((pl.col("system") == bm25_systems[0]) & (pl.col("reference") == MEASURED_BM25)))
    gaps = gaps.with_columns(
        pl.col("language").replace_strict({c: f["tier"] for c, f in by_code.items()}).alias("tier"),
        pl.col("language").replace_strict({c: f["miracl_low_resource"] for c, f in by_code.items()},
                                          return_dtype=pl.Boolean).alias("miracl_low_resource"),
        (pl.col("reference_value") - pl.col("value")).round(3).alias("gap"),
    )
    gaps = conform(gaps.sort("system", "metric", "language", "reference"), REPORT_GAPS, where="report gaps")

    if focus_corpora and primary not in set(ref_points.filter(pl.col("corpus") == focus_corpus)["reference"]):
        notes.append(f"{focus} was measured on MIRACL {focus_corpus}; the primary reference {primary} has no number on "
                     "that corpus, so no gap to it is computed (cells say 'no comparable reference').")
    groups = _groups(scores, ref_points, miracl_rows, primary, facts)
    data = _data(facts, audit, registry, miracl_rows, gaps, focus, primary)
    other = measured.filter(~pl.col("task").str.starts_with("MIRACL"))
    members = _group_members(facts)
    if members["low tier"] == members["MIRACL low-resource"]:
        notes.append(f"Among the MIRACL languages the low tier and MIRACL's own low-resource set are the same "
                     f"({', '.join(sorted(members['low tier']))}), so those two groups show the same numbers.")
    analysis = Analysis(focus=focus, primary=primary, languages=facts, scores=scores, gaps=gaps, groups=groups,
                        data=data, other=other, references=refs, notes=notes, focus_corpus=focus_corpus)
    analysis.headline, analysis.between = _headline(groups, focus, primary)
    return analysis


def _group_members(facts: list[dict]) -> dict[str, set[str]]:
    return {
        "high tier": {f["code"] for f in facts if f["tier"] == "high"},
        "mid tier": {f["code"] for f in facts if f["tier"] == "mid"},
        "low tier": {f["code"] for f in facts if f["tier"] == "low"},
        "MIRACL low-resource": {f["code"] for f in facts if f["miracl_low_resource"]},
        "all MIRACL": {f["code"] for f in facts},
    }


def _groups(scores, ref_points, miracl_rows, primary, facts) -> pl.DataFrame:
    members = _group_members(facts)
    systems = miracl_rows.select("system", "language", "metric", "corpus", "value")
    refs = ref_points.filter((pl.col("reference") != primary) & (pl.col("reference") != MEASURED_BM25)).select(
        pl.col("reference").alias("system"), "language", "metric", "corpus", pl.col("reference_value").alias("value"))
    everything = pl.concat([systems, refs])
    target = ref_points.filter(pl.col("reference") == primary).select(
        "language", "metric", "corpus", pl.col("reference_value").alias("ref"))
    paired = everything.join(target, on=["language", "metric", "corpus"], how="inner")
    rows = []
    for system in everything["system"].unique(maintain_order=True).to_list():
        for metric in METRICS:
            sub = paired.filter((pl.col("system") == system) & (pl.col("metric") == metric))
            if sub.height == 0 and everything.filter((pl.col("system") == system) & (pl.col("metric") == metric)).height == 0:
                continue
            for group in GROUPS:
                part = sub.filter(pl.col("language").is_in(sorted(members[group])))
                n = part.height
                rows.append({
                    "group": group, "system": system, "metric": metric, "reference": primary, "n_languages": n,
                    "languages": ",".join(sorted(part["language"].to_list())),
                    "mean_value": round(part["value"].mean(), 3) if n else None,
                    "mean_reference": round(part["ref"].mean(), 3) if n else None,
                    "mean_gap": round((part["ref"] - part["value"]).mean(), 3) if n else None,
                })
    return conform(pl.DataFrame(rows, schema=REPORT_GROUPS), REPORT_GROUPS, where="report groups")


def _headline(groups: pl.DataFrame, focus: str, primary: str) -> tuple[list[str], list[dict]]:
    """Sentences answering "does the model leave low-resource languages behind, and by how much?"."""
    lines, between = [], []

    def gap(system, metric, group):
        sel = groups.filter((pl.col("system") == system) & (pl.col("metric") == metric) & (pl.col("group") == group))
        if sel.height == 0 or sel["n_languages"][0] == 0:
            return None, 0, ""
        return sel["mean_gap"][0], sel["n_languages"][0], sel["languages"][0]

    for system in groups["system"].unique(maintain_order=True).to_list():
        for metric in METRICS:
            hi, n_hi, _ = gap(system, metric, "high tier")
            for other in ("mid tier", "low tier", "MIRACL low-resource"):
                lo, n_lo, langs = gap(system, metric, other)
                if hi is None or lo is None:
                    continue
                between.append({"system": system, "metric": METRIC_LABELS[metric], "group": other,
                                "gap_high": hi, "n_high": n_hi, "gap_group": lo, "n_group": n_lo,
                                "languages": langs, "difference": round(lo - hi, 3)})
    label = METRIC_LABELS["ndcg_at_10"]
    hi, n_hi, _ = gap(focus, "ndcg_at_10", "high tier")
    lo, n_lo, lo_langs = gap(focus, "ndcg_at_10", "low tier")
    if hi is not None and lo is not None and n_lo < 2:
        lines.append(
            f"No verdict: the low tier holds n = {n_lo} MIRACL language measured here ({lo_langs}), and one language "
            f"cannot stand for a group. On {label}, {focus} is {hi:.1f} points behind {primary} on high-tier "
            f"languages (mean over n = {n_hi}) and {lo:.1f} points behind on {lo_langs}; these are published "
            "references, so no interval or significance test applies to the gap.")
    elif hi is not None and lo is not None:
        diff = lo - hi
        verdict = "Yes" if diff > 0.5 else "No"
        how = (f"low-resource languages trail by a further {diff:.1f} points" if diff > 0.5
               else f"low-resource languages are {abs(diff):.1f} points {'closer to' if diff < 0 else 'about as far from'} the reference")
        lines.append(
            f"{verdict}: on {label}, {focus} is {hi:.1f} points behind {primary} on high-tier languages "
            f"(mean over {n_hi}) and {lo:.1f} points behind on low-tier languages ({lo_langs}); {how}.")
    else:
        measured = groups.filter((pl.col("system") == focus) & (pl.col("metric") == "ndcg_at_10")
                                 & (pl.col("group") == "all MIRACL"))
        langs = measured["languages"][0] if measured.height and measured["n_languages"][0] else ""
        missing = " and ".join(g for g, v in (("high-tier", hi), ("low-tier", lo)) if v is None)
        where = f"it was measured on {langs} only, with no {missing} MIRACL measurement" if langs else \
            "it was not measured on any MIRACL language with a comparable reference"
        lines.append(
            f"Cannot answer for {focus} from measurements alone: {where}, so the between-group gap of the model "
            "is not known.")
        for g, v, n in (("high tier", hi, n_hi), ("low tier", lo, n_lo)):
            if v is not None:
                lines.append(f"{focus} on the {g}: {v:.1f} points behind {primary} on {label} (mean over {n}).")
    for system in ("BM25 Lucene (published)", "multilingual-e5-large (published)", MEASURED_BM25):
        if system == focus:
            continue
        hi_r, n_h, _ = gap(system, "ndcg_at_10", "high tier")
        lo_r, n_l, _ = gap(system, "ndcg_at_10", "low tier")
        if hi_r is not None and lo_r is not None:
            caveat = " (one low-tier language: not a group verdict)" if n_l < 2 else ""
            lines.append(
                f"For comparison, {system} is {hi_r:.1f} points from {primary} on high-tier languages "
                f"(n={n_h}) and {lo_r:.1f} on low-tier ones (n={n_l}): a between-group difference of "
                f"{lo_r - hi_r:+.1f}{caveat}.")
    return lines, between


def _parse_counts(text: str | None) -> str:
    return (text or "").strip()


def _data(facts, audit, registry, miracl_rows, gaps, focus, primary) -> pl.DataFrame:
    focus_ndcg = {r["language"]: r["value"] for r in miracl_rows.filter(
        (pl.col("system") == focus) & (pl.col("metric") == "ndcg_at_10")).iter_rows(named=True)}
    primary_gap = {r["language"]: r["gap"] for r in gaps.filter(
        (pl.col("system") == focus) & (pl.col("metric") == "ndcg_at_10") & (pl.col("reference") == primary)).iter_rows(named=True)}
    audited = {r["language"]: r for r in audit.iter_rows(named=True)} if audit is not None else {}
    codes = [f["code"] for f in facts] + sorted(c for c in audited if c not in {f["code"] for f in facts})
    rows = []
    for code in codes:
        lang = registry.get(code)
        rec = audited.get(code)
        has = bool(rec) and (rec["generated"] or 0) > 0
        if audit is None:
            note = "no audit given"
        elif rec is None:
            note = "no synthetic data" + (" (eval-only language: nothing is generated for it)" if not lang.generates else " (not in the audit)")
        elif not has:
            note = "no synthetic data (the audit lists 0 generated examples)"
        else:
            note = ""
        produced = (rec["generated"] or 0) + (rec["failed"] or 0) if rec else 0
        rows.append({
            "language": code, "tier": lang.tier, "miracl_low_resource": lang.miracl_low_resource,
            "has_synthetic_data": has,
            "generated": rec["generated"] if rec else None, "accepted": rec["accepted"] if rec else None,
            "acceptance_rate": rec["acceptance_rate"] if rec else None,
            "top_reject_reasons": _parse_counts(rec["top_reject_reasons"]) if rec else None,
            "top_lid_confusions": _parse_counts(rec["top_lid_confusions"]) if rec else None,
            "cost_usd": rec["cost_usd"] if rec else None,
            "cost_per_generated_usd": (rec["cost_usd"] / produced) if rec and produced and rec["cost_usd"] is not None else None,
            "focus_ndcg_at_10": focus_ndcg.get(code), "primary_gap_ndcg_at_10": primary_gap.get(code), "note": note,
        })
    return conform(pl.DataFrame(rows, schema=REPORT_DATA), REPORT_DATA, where="report data")


# ---------------------------------------------------------------------------------------------
# plots (matplotlib, PNG, base64)
# ---------------------------------------------------------------------------------------------
def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def miracl_chart_values(a: Analysis) -> dict[str, dict[str, float]]:
    """Series of the MIRACL per-language chart: exactly the numbers of the per-language table beside it
    (MIRACL rows only; a measured XQuAD or Tatoeba number never lands in it)."""
    series = [a.focus] + _other_measured(a) + [r for r in SHOWN_REFERENCES if r != a.focus]
    bm25 = next((s for s in a.scores.filter(pl.col("kind") == "measured")["system"].unique(maintain_order=True).to_list()
                 if s.lower().startswith("bm25")), None)
    chart = {}
    for name in series:
        system = bm25 if name == MEASURED_BM25 else name
        if system is None:  # no BM25 measured here: no bars, the legend says nothing about it
            continue
        values = {}
        for code in (f["code"] for f in a.languages):
            cell = _cell(a.scores, system, code, "ndcg_at_10", {})
            if cell is not None:
                values[code] = cell["value"]
        chart[name] = values
    return chart


def _plots(a: Analysis) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    codes = [f["code"] for f in a.languages]
    plots: dict[str, str] = {}
    # 1. per-language nDCG@10: focus beside the reference points
    chart = miracl_chart_values(a)
    fig, ax = plt.subplots(figsize=(11, 3.6))
    width = 0.8 / max(len(chart), 1)
    hatches = ["", "//", "..", "xx", "--", "++", "oo"]  # told apart by pattern as well as colour
    for i, (name, values) in enumerate(chart.items()):
        xs = [j + i * width for j, c in enumerate(codes) if c in values]
        ax.bar(xs, [values[c] for c in codes if c in values], width, label=name, hatch=hatches[i % len(hatches)],
               edgecolor="black", linewidth=0.4)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(codes))], [f"{c}\n{f['tier']}" for c, f in zip(codes, a.languages)])
    ax.set_ylabel("nDCG@10 (%)")
    ax.set_title("MIRACL dev nDCG@10 per language, MIRACL numbers only (missing bar = no number)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    plots["per_language"] = _png(fig)
    # 2. mean gap to the primary reference per group
    g = a.groups.filter((pl.col("metric") == "ndcg_at_10") & (pl.col("n_languages") > 0))
    # the same systems as the group table beside it (MTEB hard-negative rows stay in groups.csv)
    mteb = set(a.scores.filter((pl.col("kind") == "mteb") & (pl.col("task") == "MIRACLRetrievalHardNegatives"))["system"].to_list())
    systems = [s for s in g["system"].unique(maintain_order=True).to_list() if s not in mteb]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    width = 0.8 / max(len(systems), 1)
    for i, name in enumerate(systems):
        sub = {r["group"]: r["mean_gap"] for r in g.filter(pl.col("system") == name).iter_rows(named=True)}
        xs = [j + i * width for j, grp in enumerate(GROUPS) if grp in sub]
        ax.bar(xs, [sub[grp] for grp in GROUPS if grp in sub], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(GROUPS))], list(GROUPS))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"mean gap to {a.primary}\n(points; >0 = behind)", fontsize=8)
    ax.set_title("nDCG@10 gap by language group")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    plots["groups"] = _png(fig)
    # 3. gap against synthetic data volume and acceptance rate
    pts = a.data.filter(pl.col("primary_gap_ndcg_at_10").is_not_null() & pl.col("has_synthetic_data"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, column, xlabel in ((axes[0], "accepted", "accepted synthetic examples"),
                               (axes[1], "acceptance_rate", "acceptance rate (accepted / generated)")):
        if pts.height:
            ax.scatter(pts[column].to_list(), pts["primary_gap_ndcg_at_10"].to_list())
            for rec in pts.iter_rows(named=True):
                ax.annotate(rec["language"], (rec[column], rec["primary_gap_ndcg_at_10"]), fontsize=8)
        else:
            ax.text(0.5, 0.5, "no language has both a measured gap\nand synthetic data in the audit",
                    ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"nDCG@10 gap to {a.primary.split(' ')[0]}", fontsize=8)
    fig.suptitle(f"{a.focus}: gap against the synthetic data behind it")
    plots["gap_vs_data"] = _png(fig)
    return plots


# ---------------------------------------------------------------------------------------------
# what this run measured (first screen), Tatoeba per language
# ---------------------------------------------------------------------------------------------
def _delta_words(c: dict) -> str:
    """'+8.1 [+5.0, +11.2]', with the sign also as a symbol: the page never relies on colour alone."""
    if c.get("ci_low") is None:
        return f"{c['delta']:+.1f}"
    mark = ("\u25b2" if c["delta"] > 0 else "\u25bc") if c["significant"] else "\u2248"
    return f"{mark} {c['delta']:+.1f} [{c['ci_low']:+.1f}, {c['ci_high']:+.1f}]"


def _task_label(task: str) -> str:
    if task.startswith("MIRACL"):
        return "MIRACL"
    if is_bitext_task(task):
        return "Tatoeba"
    return task.removesuffix("Retrieval") or task


def _measured_sections(m: measured_mod.Measured, registry: Registry) -> list[dict]:
    """One section per (task, corpus, metric): rows per language and dataset, one cell per system, one per pair."""
    sections = []
    # the first screen shows the headline metrics; every other metric mteb reports stays in measured.csv
    shown = (*METRICS, "f1", "accuracy")
    table = m.table.filter(pl.col("metric").is_in(shown)).with_columns(pl.col("tier").replace_strict(_TIER_RANK, default=3, return_dtype=pl.Int64).alias("_rank"))
    for (task, corpus, metric), part in table.group_by(["task", "corpus", "metric"], maintain_order=True):
        systems = [s for s in m.systems if s in set(part["system"])]
        pairs = [(a, b) for i, a in enumerate(systems) for b in systems[i + 1:]]
        comps = m.comparisons.filter((pl.col("task") == task) & (pl.col("metric") == metric))
        rows = []
        for (language, dataset), lang_part in part.sort("_rank", "language").group_by(["language", "dataset"], maintain_order=True):
            cells = {r["system"]: r for r in lang_part.iter_rows(named=True)}
            deltas = []
            for a, b in pairs:
                hit = comps.filter((pl.col("system_a") == a) & (pl.col("system_b") == b) & (pl.col("language") == language)
                                   & (pl.col("dataset") == dataset))
                if hit.height:
                    c = hit.row(0, named=True)
                    deltas.append({**c, "words": _delta_words(c)})
                elif a in cells and b in cells:
                    d = {"delta": cells[b]["value"] - cells[a]["value"], "ci_low": None, "significant": None}
                    deltas.append({**d, "words": _delta_words(d) + " (no per-query scores: untested)"})
                else:
                    deltas.append(None)
            lang = registry.get(language)
            rows.append({"language": language, "name": lang.name, "tier": lang.tier, "dataset": dataset,
                         "cells": [cells.get(s) for s in systems], "deltas": deltas,
                         "n": next((c["n_queries"] for c in cells.values() if c["n_queries"] is not None), None)})
        sections.append({"task": task, "label": _task_label(task), "corpus": corpus, "metric": metric,
                         "metric_label": METRIC_LABELS.get(metric, metric), "systems": systems,
                         "pairs": [f"{b} \u2212 {a}" for a, b in pairs], "rows": rows,
                         "id": f"measured-{task}-{metric}".replace(" ", "_").replace(".", "_")})
    order = {"MIRACL": 0, "Tatoeba": 2}
    return sorted(sections, key=lambda sec: (order.get(sec["label"], 1), sec["task"], sec["metric"] != "ndcg_at_10"))


def _significance_lines(m: measured_mod.Measured) -> list[str]:
    """Per pair of systems, task and metric: how many languages moved significantly (Holm), and which."""
    lines = []
    if m.comparisons.height == 0:
        return lines
    # the headline metric of each kind of task leads; the tables below carry every metric
    headline = m.comparisons.filter(pl.col("metric").is_in(["ndcg_at_10", "accuracy"]))
    comparisons = headline if headline.height else m.comparisons
    for (a, b, task, metric), part in comparisons.group_by(["system_a", "system_b", "task", "metric"], maintain_order=True):
        up = part.filter(pl.col("significant") & (pl.col("delta") > 0))["language"].to_list()
        down = part.filter(pl.col("significant") & (pl.col("delta") < 0))["language"].to_list()
        flat = part.filter(~pl.col("significant"))["language"].to_list()
        words = []
        if up:
            words.append(f"better on {len(up)} ({', '.join(up)})")
        if down:
            words.append(f"worse on {len(down)} ({', '.join(down)})")
        if flat:
            words.append(f"no significant difference on {len(flat)} ({', '.join(flat)})")
        lines.append(f"{b} against {a} on {_task_label(task)} {METRIC_LABELS.get(metric, metric)}, n = {part.height} "
                     f"language(s), paired test over queries, Holm-corrected: {'; '.join(words)}.")
    return lines


def _tatoeba_rows(m: measured_mod.Measured, audit: pl.DataFrame | None, cards: list, refs: References,
                  focus: str, registry: Registry, source_ids: dict[str, int]) -> list[dict]:
    """Per language with bitext results: the audit row, the fine-tune's change with its interval, published MTEB."""
    bitext = m.table.filter(pl.col("task").map_elements(is_bitext_task, return_dtype=pl.Boolean))
    if bitext.height == 0:
        return []
    audited = {r["language"]: r for r in audit.iter_rows(named=True)} if audit is not None else {}
    trained = next((c for c in cards if c.system == focus), None)
    comps = m.comparisons.filter(pl.col("task").map_elements(is_bitext_task, return_dtype=pl.Boolean)
                                 & (pl.col("system_b") == focus))
    base = next((s for s in m.systems if s != focus and not s.lower().startswith("bm25")
                 and s in set(bitext["system"])), None)
    rows = []
    # precision/recall stay in measured.csv; the metric with per-pair intervals leads
    with_ci = set(bitext.filter(pl.col("ci_low").is_not_null())["metric"])
    metrics = sorted((x for x in ("f1", "accuracy") if x in set(bitext["metric"])), key=lambda x: (x not in with_ci, x != "f1"))
    for language in sorted(set(bitext["language"]), key=lambda c: (_TIER_RANK.get(registry.get(c).tier, 3), c)):
        lang = registry.get(language)
        audit_row = audited.get(language)
        accepted = audit_row["accepted"] if audit_row else (trained.per_language.get(language) if trained else None)
        per_metric = []
        for metric in metrics:
            sel = bitext.filter((pl.col("language") == language) & (pl.col("metric") == metric))
            if sel.height == 0:
                continue
            values = {r["system"]: r for r in sel.iter_rows(named=True)}
            change = None
            if base:
                hit = comps.filter((pl.col("system_a") == base) & (pl.col("language") == language) & (pl.col("metric") == metric))
                if hit.height:
                    change = hit.row(0, named=True)
                elif base in values and focus in values:
                    change = {"delta": values[focus]["value"] - values[base]["value"], "ci_low": None, "significant": None}
            published = []
            for rec in refs.tatoeba.filter((pl.col("language") == language) & (pl.col("metric") == metric)).iter_rows(named=True):
                published.append({"reference": rec["reference"], "value": rec["value"],
                                  "source": source_ids.setdefault(rec["provenance"], len(source_ids) + 1)})
            label = METRIC_LABELS.get(metric, metric.upper() if metric == "f1" else metric)
            if change is None:
                sentence = f"{label}: no base model measured beside {focus}, so no change to report."
            elif change.get("ci_low") is None:
                sentence = f"{label} {change['delta']:+.1f} after fine-tuning (no per-query scores: no interval, untested)."
            elif change["significant"]:
                sentence = f"{label} {_delta_words(change)} after fine-tuning (significant, Holm-corrected p = {change['p_holm']:.3g})."
            else:
                sentence = (f"{label}: nothing moved measurably, {_delta_words(change)} after fine-tuning "
                            f"(not significant, Holm-corrected p = {change['p_holm']:.3g}).")
            per_metric.append({"metric": metric, "label": label, "values": values, "change": change,
                               "sentence": sentence, "published": published})
        rate = audit_row["acceptance_rate"] if audit_row else None
        data_words = (f"{accepted:,} accepted examples" if accepted is not None else "no synthetic data in the audit")
        if rate is not None:
            data_words += f" ({100 * rate:.0f}% of generated accepted)"
        rows.append({"language": language, "name": lang.name, "tier": lang.tier, "accepted": accepted,
                     "acceptance_rate": rate, "data_words": data_words, "metrics": per_metric,
                     "headline": f"{lang.name}: {data_words}; " + " ".join(p["sentence"] for p in per_metric)})
    return rows


def _measured_plots(sections: list[dict]) -> dict[str, str]:
    """One chart per measured section, drawn from exactly that section's rows (same task, corpus and metric)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plots = {}
    hatches = ["", "//", "..", "xx", "\\\\", "--"]  # systems told apart by pattern too, not by colour alone
    for sec in sections:
        labels = [f"{r['language']}\n{r['dataset']}" if len({x['dataset'] for x in sec['rows'] if x['language'] == r['language']}) > 1
                  else r["language"] for r in sec["rows"]]
        fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(labels) * max(1, len(sec["systems"])) / 2 + 3), 3.4))
        width = 0.8 / max(len(sec["systems"]), 1)
        has_ci = any(c is not None and c["ci_low"] is not None for r in sec["rows"] for c in r["cells"])
        for i, system in enumerate(sec["systems"]):
            xs, ys, err_lo, err_hi = [], [], [], []
            for j, row in enumerate(sec["rows"]):
                cell = row["cells"][i]
                if cell is None:
                    continue
                xs.append(j + i * width)
                ys.append(cell["value"])
                err_lo.append(cell["value"] - cell["ci_low"] if cell["ci_low"] is not None else 0)
                err_hi.append(cell["ci_high"] - cell["value"] if cell["ci_high"] is not None else 0)
            ax.bar(xs, ys, width, label=system, hatch=hatches[i % len(hatches)], edgecolor="black", linewidth=0.5,
                   yerr=[err_lo, err_hi] if has_ci else None, capsize=2)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, fontsize=8)
        ax.set_ylabel(f"{sec['metric_label']} (%)")
        whiskers = "whiskers = 95% interval" if has_ci else "no per-query scores: no intervals"
        ax.set_title(f"{sec['label']} ({sec['corpus']}): {sec['metric_label']} measured here; {whiskers}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        plots[sec["id"]] = _png(fig)
    return plots


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------
def templates_dir() -> Path:
    """reports/templates in a checkout, $WORKBENCH_TEMPLATES, or share/workbench/reports/templates."""
    if os.environ.get("WORKBENCH_TEMPLATES"):
        return Path(os.environ["WORKBENCH_TEMPLATES"])
    checkout = Path(__file__).resolve().parent.parent.parent / "reports" / "templates"
    if checkout.is_dir():
        return checkout
    installed = Path(sys.prefix) / "share" / "workbench" / "reports" / "templates"
    if installed.is_dir():
        return installed
    raise WorkbenchError("cannot find the report templates folder", where=str(checkout),
                         fix="set WORKBENCH_TEMPLATES to the folder holding gap_report.html.j2")


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             autoescape=jinja2.select_autoescape(["html.j2", "css.j2"], default=False),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, d=1: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"
    env.filters["signed"] = lambda v, d=1: "" if v is None else f"{v:+.{d}f}"
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * v:.1f}%"
    # the sign of a gap in words and a symbol, never in colour alone
    env.filters["gapword"] = lambda v, d=1: "" if v is None else (
        f"\u25b2 {v:+.{d}f} behind" if v > 0 else (f"\u25bc {v:+.{d}f} ahead" if v < 0 else f"{v:+.{d}f} level"))
    return env


def _cell(scores: pl.DataFrame, system: str, language: str, metric: str, source_ids: dict[str, int]) -> dict | None:
    sel = scores.filter((pl.col("system") == system) & (pl.col("language") == language) & (pl.col("metric") == metric)
                        & ~((pl.col("kind") == "measured") & ~pl.col("task").str.starts_with("MIRACL")))
    if sel.height == 0:
        return None
    rec = sel.sort("n_docs", descending=True, nulls_last=True).row(0, named=True)
    sid = source_ids.setdefault(rec["provenance"], len(source_ids) + 1)
    return {"value": rec["value"], "provenance": rec["provenance"], "source": sid, "corpus": rec["corpus"],
            "regime": rec["regime"]}


def _gap_or_reason(cell: dict, model: dict) -> None:
    """Like for like: a gap only on the same corpus variant (the metric is the row's); else say why not."""
    if cell["corpus"] == model["corpus"]:
        cell["gap"] = round(cell["value"] - model["value"], 3)
    else:
        cell["no_gap"] = f"no comparable reference: this is {cell['corpus']}, the model was measured on {model['corpus']}"


def _other_measured(a: Analysis) -> list[str]:
    """Measured systems with MIRACL results besides the focus and BM25 (e.g. the baseline of a fine-tune)."""
    miracl = a.scores.filter((pl.col("kind") == "measured") & pl.col("task").str.starts_with("MIRACL"))
    return [s for s in miracl["system"].unique(maintain_order=True).to_list()
            if s != a.focus and not s.lower().startswith("bm25")]


def _table_rows(a: Analysis, source_ids: dict[str, int], comparisons: pl.DataFrame | None = None
                ) -> tuple[list[str], list[dict]]:
    """Per MIRACL language: the focus cell and one cell per column. A column that was measured here too
    (another model, BM25) carries the paired test of the two systems from ``comparisons``."""
    measured_bm25 = a.scores.filter(pl.col("kind") == "measured")["system"].unique(maintain_order=True).to_list()
    bm25 = next((s for s in measured_bm25 if s.lower().startswith("bm25")), None)
    columns = _other_measured(a) + [r for r in SHOWN_REFERENCES if r != a.focus]
    rows = []
    for fact in a.languages:
        code = fact["code"]
        row = {**fact, "metrics": {}}
        for metric in METRICS:
            model = _cell(a.scores, a.focus, code, metric, source_ids)
            refs = []
            for ref in columns:
                system = bm25 if ref == MEASURED_BM25 else ref
                cell = _cell(a.scores, system, code, metric, source_ids) if system else None
                if cell and model:
                    _gap_or_reason(cell, model)
                    if comparisons is not None and comparisons.height and "gap" in cell:
                        hit = comparisons.filter(pl.col("task").str.starts_with("MIRACL") & (pl.col("language") == code)
                                                 & (pl.col("metric") == metric)
                                                 & (pl.col("system_a").is_in([system, a.focus]))
                                                 & (pl.col("system_b").is_in([system, a.focus])))
                        if hit.height:
                            test = hit.row(0, named=True)
                            cell["tested"] = ("significant" if test["significant"] else "not significant") + \
                                f" (paired test, p_Holm = {test['p_holm']:.3g})"
                refs.append(cell)
            row["metrics"][metric] = {"model": model, "refs": refs}
        rows.append(row)
    return columns, rows


def _mteb_table(a: Analysis, source_ids: dict[str, int]) -> tuple[list[str], list[dict]]:
    mteb = a.scores.filter((pl.col("kind") == "mteb") & (pl.col("metric") == "ndcg_at_10"))
    systems = mteb["system"].unique().sort().to_list()
    rows = []
    for fact in a.languages:
        cells = []
        for system in systems:
            cell = _cell(a.scores, system, fact["code"], "ndcg_at_10", source_ids)
            model = _cell(a.scores, a.focus, fact["code"], "ndcg_at_10", {})
            if cell and model:
                _gap_or_reason(cell, model)
            cells.append(cell)
        rows.append({**fact, "cells": cells})
    return systems, rows


def render(a: Analysis, config: ReportSection, inputs: list[dict], plots: dict[str, str],
           first: dict | None = None) -> tuple[str, str]:
    """``first``: the run's own measurements (sections, significance, training cards, Tatoeba rows,
    warnings, compare link), rendered before the published context."""
    source_ids: dict[str, int] = {}
    first = dict(first or {})
    first.setdefault("sections", [])
    first.setdefault("significance", [])
    first.setdefault("cards", [])
    first.setdefault("warnings", [])
    first.setdefault("compare_link", None)
    first.setdefault("measured_notes", [])
    tatoeba_builder = first.pop("tatoeba_builder", None)
    first["tatoeba"] = tatoeba_builder(source_ids) if tatoeba_builder else []
    columns, rows = _table_rows(a, source_ids, first.get("comparisons"))
    mteb_systems, mteb_rows = _mteb_table(a, source_ids)
    other = []
    for rec in a.other.iter_rows(named=True):
        words = _measured_words(rec)
        other.append({**rec, "source": source_ids.setdefault(words, len(source_ids) + 1)})
    averages = []
    for rec in a.references.averages.iter_rows(named=True):
        averages.append({**rec, "source": source_ids.setdefault(rec["provenance"], len(source_ids) + 1)})
    sources = [{"id": i, "text": t} for t, i in sorted(source_ids.items(), key=lambda kv: kv[1])]
    data_rows = a.data.to_dicts()
    context = {
        "title": config.title, "focus": a.focus, "primary": a.primary, "columns": columns, "rows": rows,
        "metric_labels": METRIC_LABELS, "metrics": METRICS, "groups": a.groups.to_dicts(), "group_names": GROUPS,
        "between": a.between, "headline": a.headline, "data_miracl": data_rows[: len(a.languages)],
        "data_other": data_rows[len(a.languages):], "mteb_systems": mteb_systems, "mteb_rows": mteb_rows,
        "other": other, "averages": averages, "sources": sources, "plots": plots, "inputs": inputs,
        "notes": a.notes, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "reference_dir": str(a.references.directory), "measured_bm25": MEASURED_BM25,
        "mteb_all": set(a.scores.filter(pl.col("kind") == "mteb")["system"].to_list()),
        "mteb_hard": set(a.scores.filter((pl.col("kind") == "mteb") & (pl.col("task") == "MIRACLRetrievalHardNegatives"))["system"].to_list()),
        "focus_corpus": a.focus_corpus, "regimes": _regimes(a), "zero_shot": ZERO_SHOT, **first,
    }
    env = _env()
    return env.get_template("gap_report.html.j2").render(**context), env.get_template("summary.md.j2").render(**context)


def _regimes(a: Analysis) -> list[dict]:
    """Each reference column with its corpus and training regime, for the like-for-like legend."""
    refs = a.scores.filter(pl.col("kind") != "measured").unique("system", keep="first", maintain_order=True)
    return [{"reference": r["system"], "corpus": r["corpus"], "regime": r["regime"]} for r in refs.iter_rows(named=True)]


def _write_table(out: Path, name: str, df: pl.DataFrame, schema: Schema) -> dict[str, int]:
    table = conform(df, schema, where=str(out / f"{name}.parquet"))
    buffer = io.BytesIO()
    table.write_parquet(buffer, compression="zstd")
    atomic_write_bytes(out / f"{name}.parquet", buffer.getvalue())
    text = io.StringIO()
    table.write_csv(text)
    atomic_write_bytes(out / f"{name}.csv", text.getvalue().encode("utf-8"))
    return {f"{name}.parquet": table.height, f"{name}.csv": table.height}


def run_report(
    out_dir: Path | str,
    results: Sequence[Path | str],
    *,
    audit: Path | str | None = None,
    config: ReportSection | None = None,
    registry: Registry | None = None,
    run: Run | None = None,
) -> StageResult:
    """Build the gap report in ``out_dir`` from results tables, an optional audit and the references.

    Writes index.html, summary.md, report.json and scores/gaps/groups/data as .parquet + .csv.
    Nothing is written unless every input reads cleanly. With ``run`` (and ``out_dir`` inside it)
    the stage is recorded in the run's manifest.
    """
    config = config or ReportSection()
    registry = registry or load_registry()
    frame = load_results(results, registry)
    audit_df = load_audit(audit, registry)
    refs = load_references(reference_dir(config.reference_dir))
    per_query = measured_mod.load_per_query(results)
    analysis = analyse(frame, audit_df, refs, registry, config)
    measured = measured_mod.measure(frame, per_query, registry, analysis.focus)
    cards = measured_mod.training_cards(frame)
    inputs = [{"role": "results", "path": str(p), "sha256": file_sha256(Path(p))} for p in results]
    for p in results:
        if (Path(p).parent / measured_mod.PER_QUERY_FILE).is_file():
            pq = Path(p).parent / measured_mod.PER_QUERY_FILE
            inputs.append({"role": "per-query scores", "path": str(pq), "sha256": file_sha256(pq)})
    if audit is not None:
        inputs.append({"role": "audit", "path": str(audit), "sha256": file_sha256(Path(audit))})
    sections = _measured_sections(measured, registry)
    plots = _plots(analysis) | _measured_plots(sections)
    warnings = measured_mod.leakage_warnings(cards, frame) + [f"{c.system}: {w}" for c in cards for w in c.warnings]
    out = Path(out_dir)
    compare_link = _compare_view(frame, measured.systems, analysis.focus, out, registry)
    first = {
        "sections": sections, "significance": _significance_lines(measured), "cards": cards, "warnings": warnings,
        "compare_link": compare_link, "measured_notes": measured.notes, "comparisons": measured.comparisons,
        "tatoeba_builder": lambda ids: _tatoeba_rows(measured, audit_df, cards, refs, analysis.focus, registry, ids),
    }
    html, markdown = render(analysis, config, inputs, plots, first)
    out.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, int] = {}
    outputs |= _write_table(out, "measured", measured.table, REPORT_MEASURED)
    outputs |= _write_table(out, "comparisons", measured.comparisons, REPORT_COMPARISONS)
    outputs |= _write_table(out, "scores", analysis.scores, REPORT_SCORES)
    outputs |= _write_table(out, "gaps", analysis.gaps, REPORT_GAPS)
    outputs |= _write_table(out, "groups", analysis.groups, REPORT_GROUPS)
    outputs |= _write_table(out, "data", analysis.data, REPORT_DATA)
    meta = {"focus": analysis.focus, "primary_reference": analysis.primary, "inputs": inputs,
            "reference_dir": str(refs.directory), "headline": analysis.headline, "notes": analysis.notes,
            "measured_significance": first["significance"], "warnings": warnings,
            "compare_view": compare_link}
    atomic_write_bytes(out / "report.json", json.dumps(meta, indent=2, ensure_ascii=False).encode("utf-8"))
    atomic_write_bytes(out / "summary.md", markdown.encode("utf-8"))
    atomic_write_bytes(out / "index.html", html.encode("utf-8"))  # last: the page exists only when complete
    outputs |= {"report.json": 1, "summary.md": 1, "index.html": 1}
    if run is not None and out.resolve().is_relative_to(run.root.resolve()):
        prefix = out.resolve().relative_to(run.root.resolve())
        run.record_stage(STAGE, status="complete", config_hash=config.fingerprint(),
                         outputs={str(prefix / name): rows for name, rows in outputs.items()},
                         stats={"focus": analysis.focus, "inputs": inputs})
    log.info("report written to %s (focus %s)", out, analysis.focus)
    return StageResult(STAGE, outputs=outputs, stats={"focus": analysis.focus, "headline": analysis.headline,
                                                      "out_dir": str(out)})


def _compare_view(results: pl.DataFrame, systems: list[str], focus: str, out: Path, registry: Registry) -> str | None:
    """compare/compare.html beside the report: the focus system against the model measured before it."""
    models = [s for s in systems if not s.lower().startswith("bm25")]
    if focus not in models or len(models) < 2:
        return None
    base = models[models.index(focus) - 1] if models.index(focus) else models[1]
    files = {s: results.filter(pl.col("system") == s)["input_file"][0] for s in (base, focus)}
    a = results.filter((pl.col("system") == base) & (pl.col("source") == "measured"))
    b = results.filter((pl.col("system") == focus) & (pl.col("source") == "measured"))
    key = ["task", "dataset", "language", "split", "metric"]
    if a.join(b, on=key, how="inner").height == 0:
        return None  # nothing in common: no compare page to link
    run_compare(f"{files[base]}@{base}", f"{files[focus]}@{focus}", out / "compare",
                registry=registry, title=f"{focus} against {base}")
    return "compare/compare.html"


# ---------------------------------------------------------------------------------------------
# compare mode
# ---------------------------------------------------------------------------------------------
def _resolve_side(spec: str, registry: Registry) -> tuple[str, pl.DataFrame]:
    """``PATH[@SYSTEM]`` -> (label, that system's rows). PATH is a results table or a run directory."""
    path_text, system = spec, ""
    if not Path(spec).exists() and "@" in spec:
        path_text, _, system = spec.rpartition("@")
    path = Path(path_text)
    if path.is_dir():
        path = path / "eval" / "results.parquet"
    frame = load_results([path], registry)
    systems = frame["system"].unique(maintain_order=True).to_list()
    if system:
        if system not in systems:
            raise WorkbenchError(f"system '{system}' is not in this table", where=str(path),
                                 fix=f"choose one of {', '.join(systems)}")
    elif len(systems) == 1:
        system = systems[0]
    else:
        raise WorkbenchError(f"the table holds several systems ({', '.join(systems)})", where=str(path),
                             fix=f"name one as {path_text}@SYSTEM")
    return f"{system} ({path})", frame.filter(pl.col("system") == system)


def compare(a_spec: str, b_spec: str, registry: Registry) -> pl.DataFrame:
    """Per language, task and metric: the value of A, of B, and B - A. Raises on nothing in common."""
    label_a, a = _resolve_side(a_spec, registry)
    label_b, b = _resolve_side(b_spec, registry)
    key = ["task", "dataset", "language", "split", "metric"]
    joined = a.select(*key, pl.col("value").alias("value_a")).join(
        b.select(*key, pl.col("value").alias("value_b")), on=key, how="inner")
    if joined.height == 0:
        def shape(df):
            return "; ".join(sorted({f"{r['task']}/{r['dataset']}/{r['metric']}" for r in df.iter_rows(named=True)}))[:300]
        raise WorkbenchError(
            f"mixed metrics: A and B share no (task, dataset, language, metric): A has {shape(a)}; B has {shape(b)}",
            where="--compare", fix="compare results of the same evaluation (same task, dataset and metric)")
    rows = []
    for rec in joined.sort("task", "metric", "language").iter_rows(named=True):
        fact = registry.get(rec["language"])
        rows.append({"language": rec["language"], "tier": fact.tier, "miracl_low_resource": fact.miracl_low_resource,
                     "task": rec["task"], "metric": rec["metric"], "label_a": label_a, "value_a": rec["value_a"],
                     "label_b": label_b, "value_b": rec["value_b"],
                     "delta": round(rec["value_b"] - rec["value_a"], 3)})
    return conform(pl.DataFrame(rows, schema=REPORT_COMPARE), REPORT_COMPARE, where="compare")


def run_compare(a_spec: str, b_spec: str, out_dir: Path | str, *, registry: Registry | None = None,
                title: str = "Run comparison") -> StageResult:
    """Write compare.html, compare.md and compare.parquet/.csv: per-language deltas B - A.

    ``a_spec``/``b_spec``: ``PATH[@SYSTEM]``, PATH an EVAL_RESULTS table or a run directory.
    """
    registry = registry or load_registry()
    table = compare(a_spec, b_spec, registry)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    sections = []
    for (task, metric), part in table.group_by(["task", "metric"], maintain_order=True):
        part = part.with_columns(pl.col("tier").replace_strict(_TIER_RANK, return_dtype=pl.Int64).alias("_rank")).sort(
            "_rank", "language").drop("_rank")
        fig, ax = plt.subplots(figsize=(max(4, 0.5 * part.height + 2), 3))
        colors = ["#1b7f3b" if d >= 0 else "#b00020" for d in part["delta"].to_list()]
        ax.bar(part["language"].to_list(), part["delta"].to_list(), color=colors)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel(f"B - A, {METRIC_LABELS.get(metric, metric)} (points)")
        ax.set_title(f"{task}: {METRIC_LABELS.get(metric, metric)}")
        means = part.group_by("tier", maintain_order=True).agg(pl.col("delta").mean().round(3).alias("mean"), pl.len().alias("n"))
        sections.append({"task": task, "metric": METRIC_LABELS.get(metric, metric), "rows": part.to_dicts(),
                         "means": means.to_dicts(), "plot": _png(fig)})
    context = {"title": title, "label_a": table["label_a"][0], "label_b": table["label_b"][0], "sections": sections,
               "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    env = _env()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs = _write_table(out, "compare", table, REPORT_COMPARE)
    atomic_write_bytes(out / "compare.md", env.get_template("compare.md.j2").render(**context).encode("utf-8"))
    atomic_write_bytes(out / "compare.html", env.get_template("compare.html.j2").render(**context).encode("utf-8"))
    outputs |= {"compare.md": 1, "compare.html": 1}
    return StageResult(STAGE, outputs=outputs, stats={"rows": table.height, "out_dir": str(out)})
