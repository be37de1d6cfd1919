"""Report analysis: scores, like-for-like gaps, language-group means, the data table and the verdict.

Gaps are ``reference - model`` in points of the metric: a positive gap means the model is behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from workbench.config import ReportSection
from workbench.errors import WorkbenchError
from workbench.languages import Registry
from workbench.tables import REPORT_DATA, REPORT_GAPS, REPORT_GROUPS, REPORT_SCORES, conform
from workbench.report.references import FULL, HARD_NEGATIVES_V1, NO_TRAINING, References, corpus_variant, is_bm25

METRICS = ("ndcg_at_10", "recall_at_100")
METRIC_LABELS = {"ndcg_at_10": "nDCG@10", "recall_at_100": "Recall@100", "f1": "F1", "accuracy": "accuracy"}
MEASURED_BM25 = "BM25 (measured here)"
# Reference columns shown beside the model in the per-language table (in this order).
SHOWN_REFERENCES = (
    "e5-mistral-7b-instruct (published)",
    "e5-mistral-7b-instruct (MTEB hard negatives v1)",
    "multilingual-e5-large (published)",
    "BM25 Lucene (published)",
    MEASURED_BM25,
)
TIER_RANK = {"high": 0, "mid": 1, "low": 2}
GROUPS = ("high tier", "mid tier", "low tier", "MIRACL low-resource", "all MIRACL")


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


def measured_words(rec: dict) -> str:
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
        candidates = [s for s in pool if not is_bm25(s)]
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
    bm25_systems = [s for s in miracl_rows["system"].unique(maintain_order=True).to_list() if is_bm25(s)]
    if len(bm25_systems) > 1:
        notes.append(f"several BM25 systems were measured ({', '.join(bm25_systems)}); '{MEASURED_BM25}' is {bm25_systems[0]}.")
    for rec in measured.iter_rows(named=True):
        fact = registry.get(rec["language"])
        rows.append({
            "language": rec["language"], "tier": fact.tier, "miracl_low_resource": fact.miracl_low_resource,
            "system": rec["system"], "kind": "measured", "model": rec["model"], "task": rec["task"],
            "dataset": rec["dataset"], "metric": rec["metric"], "value": rec["value"],
            "n_queries": rec["n_queries"], "n_docs": rec["n_docs"], "provenance": measured_words(rec),
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
            pl.lit(NO_TRAINING).alias("reference_regime"))
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
