"""Report analysis: scores, like-for-like gaps, language-group means, the data table and the headline.

Gaps are ``reference - model`` in points of the metric: a positive gap means the model is behind. A
gap is computed only where every condition column matches (:func:`workbench.conditions.differences`:
benchmark, task kind, corpus, split, revision where stated, instruction, max_length where stated,
regime per language) and the reference is not disputed; every other pairing stays in ``gaps`` with
its gap empty and the conditions that differ in words. The headline answers the tier question from
the two-level bootstrap (:mod:`workbench.report.tiers`), never from published point differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from workbench import conditions
from workbench.config import ReportSection
from workbench.errors import WorkbenchError
from workbench.languages import Registry
from workbench.metrics import NDCG_AT_10, RECALL_AT_100, metric_label
from workbench.report.inputs import SystemFacts, system_facts
from workbench.report.references import References
from workbench.report.tiers import headline as tier_headline
from workbench.tables import REPORT_DATA, REPORT_GAPS, REPORT_GROUPS, REPORT_SCORES, REPORT_TIERS, conform

METRICS = (NDCG_AT_10, RECALL_AT_100)  # the retrieval metrics the report compares
MEASURED_BM25 = "BM25 (measured here)"
TIER_RANK = {"high": 0, "mid": 1, "low": 2}
GROUPS = ("high tier", "mid tier", "low tier", "MIRACL low-resource", "all MIRACL")
_COND = list(conditions.CONDITIONS)


@dataclass
class Analysis:
    focus: str
    primary: str | None  # None: no reference is comparable with the focus system
    languages: list[dict]  # registry facts of the 18 MIRACL languages, in table order
    scores: pl.DataFrame
    gaps: pl.DataFrame
    groups: pl.DataFrame
    data: pl.DataFrame
    other: pl.DataFrame  # measured non-MIRACL rows (XQuAD, ...)
    references: References
    tiers: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=REPORT_TIERS))
    systems: dict[str, SystemFacts] = field(default_factory=dict)
    sources: list[dict] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    focus_corpus: str = conditions.FULL
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
        how = f"; {conditions.instruction_words(rec.get('instruction'))}"
        if rec.get("max_length"):
            how += f", max_length {rec['max_length']}"
        if rec.get("contract_from"):
            how += f", under the contract of {rec['contract_from']}"
        return (
            f"measured here by the workbench: {rec['model']} on {rec['dataset']} ({rec['task']}, "
            f"{rec['split']} split{size_txt}{how}){', ' + when if when else ''}; table {rec['input_file']}"
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


def pick_focus(results: pl.DataFrame, wanted: str | None) -> str:
    """``--focus``, else a system this workbench trained (its first seed), else the last other system that
    runs under its own contract; lexical systems only when nothing else was measured."""
    facts = system_facts(results)
    systems = list(facts)
    if wanted:
        if wanted not in systems:
            raise WorkbenchError(f"focus system '{wanted}' is not in the results", where="--focus",
                                 fix=f"choose one of {', '.join(systems)}")
        return wanted
    candidates = [s for s, f in facts.items() if not f.lexical and not f.replica and not f.contract_from]
    trained = [s for s in candidates if facts[s].trained_here]
    miracl = set(results.filter(pl.col("benchmark") == "miracl")["system"])
    for pool in ([s for s in trained if s in miracl], trained, [s for s in candidates if s in miracl], candidates):
        if pool:
            return pool[-1]
    return systems[-1]


def analyse(results: pl.DataFrame, audit: pl.DataFrame | None, refs: References, registry: Registry,
            config: ReportSection, tiers: pl.DataFrame | None = None) -> Analysis:
    facts = _language_facts(registry)
    by_code = {f["code"]: f for f in facts}
    systems = system_facts(results)
    focus = pick_focus(results, config.focus)
    notes: list[str] = []

    # measured MIRACL rows: one per (system, language, metric), the largest corpus first; seed replicas
    # and systems under another model's contract stay in the measured tables, not in the gap table
    measured = results.sort("n_docs", descending=True, nulls_last=True)
    miracl_all = measured.filter((pl.col("benchmark") == "miracl")
                                 & pl.col("system").is_in([s for s, f in systems.items() if not f.replica]))
    miracl_rows = miracl_all.unique(["system", "language", "metric"], keep="first", maintain_order=True)
    if miracl_all.height > miracl_rows.height:
        notes.append(f"{miracl_all.height - miracl_rows.height} MIRACL result row(s) measured on a smaller corpus were "
                     "left out of the per-language table where the same system, language and metric was measured on a "
                     "larger one (all rows are in scores and the measured tables).")
    focus_corpora = miracl_rows.filter(pl.col("system") == focus)["corpus"].to_list()
    focus_corpus = max(set(focus_corpora), key=focus_corpora.count) if focus_corpora else "no MIRACL measurement"
    lexical = [s for s in miracl_rows["system"].unique(maintain_order=True).to_list() if systems[s].lexical]
    if len(lexical) > 1:
        notes.append(f"several BM25 systems were measured ({', '.join(lexical)}); '{MEASURED_BM25}' is {lexical[0]}.")

    scores = _scores(measured, refs, registry, by_code)
    ref_points = scores.filter((pl.col("kind") != "measured") & pl.col("shown")).select(
        "language", "metric", *_COND, pl.col("system").alias("reference"), pl.col("kind").alias("reference_kind"),
        pl.col("value").alias("reference_value"), "disputed", "other_sources", "version")
    if lexical:
        bm25 = miracl_rows.filter(pl.col("system") == lexical[0]).select(
            "language", "metric", *_COND, pl.lit(MEASURED_BM25).alias("reference"),
            pl.lit("measured").alias("reference_kind"), pl.col("value").alias("reference_value"),
            pl.lit(False).alias("disputed"), pl.lit(None, pl.Utf8).alias("other_sources"),
            pl.lit("measured here").alias("version"))
        ref_points = pl.concat([ref_points, bm25])
    gaps = _gaps(miracl_rows, ref_points, by_code, lexical[0] if lexical else None)

    primary = _primary(config.primary_reference, gaps, ref_points, focus, notes, shown_references(refs))
    tiers = tiers if tiers is not None else pl.DataFrame(schema=REPORT_TIERS)
    groups = _groups(gaps, ref_points, primary, facts)
    data = _data(facts, audit, registry, miracl_rows, gaps, focus, primary)
    other = measured.filter((pl.col("benchmark") != "miracl") & (pl.col("source") == "measured"))
    members = _group_members(facts)
    if members["low tier"] == members["MIRACL low-resource"]:
        notes.append(f"Among the MIRACL languages the low tier and MIRACL's own low-resource set are the same "
                     f"({', '.join(sorted(members['low tier']))}), so those two groups show the same numbers.")
    disputed = ref_points.filter(pl.col("disputed")).unique(["reference", "language", "metric"])
    if disputed.height:
        shown = ", ".join(f"{r['reference']} {r['language']} {metric_label(r['metric'])}"
                          for r in disputed.sort("reference", "language").iter_rows(named=True))
        notes.append(f"Disputed published numbers (two sources more than 1 point apart; both shown, no gap computed): "
                     f"{shown}.")
    analysis = Analysis(focus=focus, primary=primary, languages=facts, scores=scores, gaps=gaps, groups=groups,
                        data=data, other=other, references=refs, tiers=tiers, systems=systems, notes=notes,
                        focus_corpus=focus_corpus)
    analysis.headline = tier_headline(tiers, focus)
    analysis.between = _between(groups)
    return analysis


def _scores(measured: pl.DataFrame, refs: References, registry: Registry, by_code: dict) -> pl.DataFrame:
    rows = []
    for rec in measured.iter_rows(named=True):
        fact = registry.get(rec["language"])
        rows.append({
            "language": rec["language"], "tier": fact.tier, "miracl_low_resource": fact.miracl_low_resource,
            "system": rec["system"], "kind": "measured", "model": rec["model"], "task": rec["task"],
            "dataset": rec["dataset"], "metric": rec["metric"], "value": rec["value"],
            "n_queries": rec["n_queries"], "n_docs": rec["n_docs"], "provenance": measured_words(rec),
            **{c: rec[c] for c in _COND}, "source": rec["source"], "version": None, "disputed": False, "shown": True,
            "other_sources": None,
        })
    for rec in refs.per_language.iter_rows(named=True):
        if rec["language"] not in by_code:
            continue
        fact = by_code[rec["language"]]
        rows.append({
            "language": rec["language"], "tier": fact["tier"], "miracl_low_resource": fact["miracl_low_resource"],
            "system": rec["reference"], "kind": rec["kind"], "model": rec["model"], "task": rec["task"],
            "dataset": "MIRACL dev", "metric": rec["metric"], "value": rec["value"],
            "n_queries": None, "n_docs": None, "provenance": rec["provenance"], **{c: rec[c] for c in _COND},
            "source": rec["source"], "version": rec["version"], "disputed": rec["disputed"], "shown": rec["shown"],
            "other_sources": rec["other_sources"],
        })
    return conform(pl.DataFrame(rows, schema=REPORT_SCORES), REPORT_SCORES, where="report scores")


def _gaps(miracl_rows: pl.DataFrame, ref_points: pl.DataFrame, by_code: dict, bm25: str | None) -> pl.DataFrame:
    """Every measured MIRACL number against every reference point of its language and metric; a gap only
    where every condition matches and the reference is not disputed."""
    refs_by = {}
    for ref in ref_points.iter_rows(named=True):
        refs_by.setdefault((ref["language"], ref["metric"]), []).append(ref)
    rows = []
    for rec in miracl_rows.iter_rows(named=True):
        for ref in refs_by.get((rec["language"], rec["metric"]), []):
            if rec["system"] == bm25 and ref["reference"] == MEASURED_BM25:
                continue
            differ = conditions.differences(rec, ref, conditions.PUBLISHED_CONDITIONS)
            reasons = [conditions.difference_words(c, rec, ref) for c in differ]
            if ref["disputed"]:
                reasons.insert(0, f"disputed: {ref['reference_value']:.1f} ({ref['version']}) against "
                                  f"{ref['other_sources']}")
            comparable = not reasons
            fact = by_code[rec["language"]]
            rows.append({
                "language": rec["language"], "tier": fact["tier"], "miracl_low_resource": fact["miracl_low_resource"],
                "system": rec["system"], "metric": rec["metric"], "value": rec["value"], "reference": ref["reference"],
                "reference_kind": ref["reference_kind"], "reference_value": ref["reference_value"],
                "gap": round(ref["reference_value"] - rec["value"], 3) if comparable else None,
                "corpus": rec["corpus"], "reference_regime": ref["regime"], "comparable": comparable,
                "differs": "; ".join(reasons) or None,
            })
    gaps = pl.DataFrame(rows, schema=REPORT_GAPS)
    return conform(gaps.sort("system", "metric", "language", "reference"), REPORT_GAPS, where="report gaps")


def shown_references(refs: References) -> tuple[str, ...]:
    """The reference columns of the per-language table, in order: those the reference folder's
    sources.toml places (``report_column``), then the BM25 measured here."""
    return (*refs.report_columns, MEASURED_BM25)


def _primary(wanted: str, gaps: pl.DataFrame, ref_points: pl.DataFrame, focus: str, notes: list[str],
             order: tuple[str, ...]) -> str | None:
    """The reference the groups and the data table measure gaps to: the configured one, or ("auto") the
    one comparable with the focus system on the most MIRACL languages (ties: ``order``, the table's
    reference columns, then the label)."""
    labels = ref_points["reference"].unique(maintain_order=True).to_list()
    if wanted != "auto":
        if wanted not in labels:
            raise WorkbenchError(f"'{wanted}' is not a reference label here",
                                 where="[report] primary_reference / --reference",
                                 fix=f"use auto or one of: {', '.join(labels)}")
        if not gaps.filter((pl.col("system") == focus) & (pl.col("reference") == wanted) & pl.col("comparable")).height:
            notes.append(f"The primary reference {wanted} is comparable with {focus} on no MIRACL language, so no gap to "
                         "it is computed (each cell says which condition differs).")
        return wanted
    focus_gaps = gaps.filter((pl.col("system") == focus) & (pl.col("metric") == NDCG_AT_10))
    counts = {label: focus_gaps.filter((pl.col("reference") == label) & pl.col("comparable")).height for label in labels}
    rank = {label: i for i, label in enumerate(order)}
    best = sorted(labels, key=lambda label: (-counts[label], rank.get(label, len(rank)), label))
    if not best or counts[best[0]] == 0:
        if focus_gaps.height:
            common = focus_gaps.filter(~pl.col("comparable"))["differs"].drop_nulls().to_list()
            reasons = sorted({part.split(":")[0] for text in common for part in text.split("; ")})
            notes.append(f"No published or measured reference is comparable with {focus}'s MIRACL numbers (conditions "
                         f"that differ: {', '.join(reasons)}), so no gap is computed; each cell says why.")
        return None
    return best[0]


def _group_members(facts: list[dict]) -> dict[str, set[str]]:
    return {
        "high tier": {f["code"] for f in facts if f["tier"] == "high"},
        "mid tier": {f["code"] for f in facts if f["tier"] == "mid"},
        "low tier": {f["code"] for f in facts if f["tier"] == "low"},
        "MIRACL low-resource": {f["code"] for f in facts if f["miracl_low_resource"]},
        "all MIRACL": {f["code"] for f in facts},
    }


def _groups(gaps: pl.DataFrame, ref_points: pl.DataFrame, primary: str | None, facts: list[dict]) -> pl.DataFrame:
    """Mean score and mean comparable gap to the primary reference per group, for each measured system."""
    members = _group_members(facts)
    rows = []
    if primary is not None:
        to_primary = gaps.filter((pl.col("reference") == primary) & pl.col("comparable"))
        for system in gaps["system"].unique(maintain_order=True).to_list():
            for metric in METRICS:
                sub = to_primary.filter((pl.col("system") == system) & (pl.col("metric") == metric))
                for group in GROUPS:
                    part = sub.filter(pl.col("language").is_in(sorted(members[group])))
                    n = part.height
                    rows.append({
                        "group": group, "system": system, "metric": metric, "reference": primary, "n_languages": n,
                        "languages": ",".join(sorted(part["language"].to_list())),
                        "mean_value": round(part["value"].mean(), 3) if n else None,
                        "mean_reference": round(part["reference_value"].mean(), 3) if n else None,
                        "mean_gap": round(part["gap"].mean(), 3) if n else None,
                    })
    return conform(pl.DataFrame(rows, schema=REPORT_GROUPS), REPORT_GROUPS, where="report groups")


def _between(groups: pl.DataFrame) -> list[dict]:
    """(mean gap in a group) - (mean gap on the high tier), per system: descriptive, no verdict (published
    references carry no per-query data; the tier question is answered with inference in the headline)."""
    between = []

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
                between.append({"system": system, "metric": metric_label(metric), "group": other,
                                "gap_high": hi, "n_high": n_hi, "gap_group": lo, "n_group": n_lo,
                                "languages": langs, "difference": round(lo - hi, 3)})
    return between


def _parse_counts(text: str | None) -> str:
    return (text or "").strip()


def _data(facts, audit, registry, miracl_rows, gaps, focus, primary) -> pl.DataFrame:
    focus_ndcg = {r["language"]: r["value"] for r in miracl_rows.filter(
        (pl.col("system") == focus) & (pl.col("metric") == NDCG_AT_10)).iter_rows(named=True)}
    primary_gap = {r["language"]: r["gap"] for r in gaps.filter(
        (pl.col("system") == focus) & (pl.col("metric") == NDCG_AT_10) & (pl.col("reference") == primary)
        & pl.col("comparable")).iter_rows(named=True)} if primary else {}
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
