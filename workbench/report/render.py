"""Report rendering: the template context (per-language tables, the run's own measurements first,
Tatoeba rows, sources) rendered through the Jinja templates in reports/templates, and the tidy
tables written as .parquet + .csv.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from pathlib import Path

import polars as pl

from workbench.config import ReportSection
from workbench.languages import Registry
from workbench.resources import data_dir
from workbench.run import atomic_write_bytes
from workbench.tables import Schema, conform
from workbench.report import measured as measured_mod
from workbench.report.analysis import (
    GROUPS,
    MEASURED_BM25,
    METRIC_LABELS,
    METRICS,
    SHOWN_REFERENCES,
    TIER_RANK,
    Analysis,
    measured_words,
)
from workbench.report.references import ZERO_SHOT, References, is_bitext_task, is_bm25


def templates_dir() -> Path:
    """$WORKBENCH_TEMPLATES, reports/templates in a checkout, or share/workbench/reports/templates."""
    return data_dir("reports/templates", "WORKBENCH_TEMPLATES")


def template_env():
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


def table_cell(scores: pl.DataFrame, system: str, language: str, metric: str, source_ids: dict[str, int]) -> dict | None:
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


def other_measured(a: Analysis) -> list[str]:
    """Measured systems with MIRACL results besides the focus and BM25 (e.g. the baseline of a fine-tune)."""
    miracl = a.scores.filter((pl.col("kind") == "measured") & pl.col("task").str.starts_with("MIRACL"))
    return [s for s in miracl["system"].unique(maintain_order=True).to_list()
            if s != a.focus and not is_bm25(s)]


def _table_rows(a: Analysis, source_ids: dict[str, int], comparisons: pl.DataFrame | None = None
                ) -> tuple[list[str], list[dict]]:
    """Per MIRACL language: the focus cell and one cell per column. A column that was measured here too
    (another model, BM25) carries the paired test of the two systems from ``comparisons``."""
    measured_bm25 = a.scores.filter(pl.col("kind") == "measured")["system"].unique(maintain_order=True).to_list()
    bm25 = next((s for s in measured_bm25 if is_bm25(s)), None)
    columns = other_measured(a) + [r for r in SHOWN_REFERENCES if r != a.focus]
    rows = []
    for fact in a.languages:
        code = fact["code"]
        row = {**fact, "metrics": {}}
        for metric in METRICS:
            model = table_cell(a.scores, a.focus, code, metric, source_ids)
            refs = []
            for ref in columns:
                system = bm25 if ref == MEASURED_BM25 else ref
                cell = table_cell(a.scores, system, code, metric, source_ids) if system else None
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
        model = table_cell(a.scores, a.focus, fact["code"], "ndcg_at_10", {})
        for system in systems:
            cell = table_cell(a.scores, system, fact["code"], "ndcg_at_10", source_ids)
            if cell and model:
                _gap_or_reason(cell, model)
            cells.append(cell)
        rows.append({**fact, "cells": cells})
    return systems, rows


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


def measured_sections(m: measured_mod.Measured, registry: Registry) -> list[dict]:
    """One section per (task, corpus, metric): rows per language and dataset, one cell per system, one per pair."""
    sections = []
    # the first screen shows the headline metrics; every other metric mteb reports stays in measured.csv
    shown = (*METRICS, "f1", "accuracy")
    table = m.table.filter(pl.col("metric").is_in(shown)).with_columns(pl.col("tier").replace_strict(TIER_RANK, default=3, return_dtype=pl.Int64).alias("_rank"))
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


def significance_lines(m: measured_mod.Measured) -> list[str]:
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


def tatoeba_rows(m: measured_mod.Measured, audit: pl.DataFrame | None, cards: list, refs: References,
                  focus: str, registry: Registry, source_ids: dict[str, int]) -> list[dict]:
    """Per language with bitext results: the audit row, the fine-tune's change with its interval, published MTEB."""
    bitext = m.table.filter(pl.col("task").map_elements(is_bitext_task, return_dtype=pl.Boolean))
    if bitext.height == 0:
        return []
    audited = {r["language"]: r for r in audit.iter_rows(named=True)} if audit is not None else {}
    trained = next((c for c in cards if c.system == focus), None)
    comps = m.comparisons.filter(pl.col("task").map_elements(is_bitext_task, return_dtype=pl.Boolean)
                                 & (pl.col("system_b") == focus))
    base = next((s for s in m.systems if s != focus and not is_bm25(s)
                 and s in set(bitext["system"])), None)
    rows = []
    # precision/recall stay in measured.csv; the metric with per-pair intervals leads
    with_ci = set(bitext.filter(pl.col("ci_low").is_not_null())["metric"])
    metrics = sorted((x for x in ("f1", "accuracy") if x in set(bitext["metric"])), key=lambda x: (x not in with_ci, x != "f1"))
    for language in sorted(set(bitext["language"]), key=lambda c: (TIER_RANK.get(registry.get(c).tier, 3), c)):
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
        words = measured_words(rec)
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
    env = template_env()
    return env.get_template("gap_report.html.j2").render(**context), env.get_template("summary.md.j2").render(**context)


def _regimes(a: Analysis) -> list[dict]:
    """Each reference column with its corpus and training regime, for the like-for-like legend."""
    refs = a.scores.filter(pl.col("kind") != "measured").unique("system", keep="first", maintain_order=True)
    return [{"reference": r["system"], "corpus": r["corpus"], "regime": r["regime"]} for r in refs.iter_rows(named=True)]


def write_table(out: Path, name: str, df: pl.DataFrame, schema: Schema) -> dict[str, int]:
    table = conform(df, schema, where=str(out / f"{name}.parquet"))
    buffer = io.BytesIO()
    table.write_parquet(buffer, compression="zstd")
    atomic_write_bytes(out / f"{name}.parquet", buffer.getvalue())
    text = io.StringIO()
    table.write_csv(text)
    atomic_write_bytes(out / f"{name}.csv", text.getvalue().encode("utf-8"))
    return {f"{name}.parquet": table.height, f"{name}.csv": table.height}
