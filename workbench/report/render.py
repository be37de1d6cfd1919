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

from workbench import conditions
from workbench.config import ReportSection
from workbench.languages import Registry
from workbench.metrics import ACCURACY, F1, NDCG_AT_10, metric_label
from workbench.report import measured as measured_mod
from workbench.report.analysis import (
    GROUPS,
    MEASURED_BM25,
    METRICS,
    TIER_RANK,
    Analysis,
    measured_words,
    shown_references,
)
from workbench.report.references import References
from workbench.resources import data_dir
from workbench.run import atomic_write_bytes
from workbench.tables import Schema, conform


def templates_dir() -> Path:
    """$WORKBENCH_TEMPLATES, reports/templates in a checkout, or share/workbench/reports/templates."""
    return data_dir("reports/templates", "WORKBENCH_TEMPLATES")


def gap_words(v: float | None, d: int = 1) -> str:
    """A gap in words only: the triangles mean "significantly higher / lower" in measured differences
    and nothing else, so a published gap (untested) never carries one."""
    if v is None:
        return ""
    return f"{abs(v):.{d}f} behind" if v > 0 else (f"{abs(v):.{d}f} ahead" if v < 0 else "level")


def template_env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             autoescape=jinja2.select_autoescape(["html.j2", "css.j2"], default=False),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, d=1: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"
    env.filters["signed"] = lambda v, d=1: "" if v is None else f"{v:+.{d}f}"
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * v:.1f}%"
    env.filters["gapword"] = gap_words
    env.filters["metric_label"] = metric_label  # nDCG@10, Recall@100, MRR@10, F1, ...
    env.globals["NDCG_AT_10"] = NDCG_AT_10  # templates name metrics through workbench/metrics.py too
    return env


def table_cell(scores: pl.DataFrame, system: str, language: str, metric: str, source_ids: dict[str, int]) -> dict | None:
    """The MIRACL number a table cell shows for ``system`` (a measured system or a reference label)."""
    sel = scores.filter((pl.col("system") == system) & (pl.col("language") == language) & (pl.col("metric") == metric)
                        & (pl.col("benchmark") == "miracl") & pl.col("shown"))
    if sel.height == 0:
        return None
    rec = sel.sort("n_docs", descending=True, nulls_last=True).row(0, named=True)
    sid = source_ids.setdefault(rec["provenance"], len(source_ids) + 1)
    return {"value": rec["value"], "provenance": rec["provenance"], "source": sid, "corpus": rec["corpus"],
            "regime": rec["regime"], "disputed": rec["disputed"], "other_sources": rec["other_sources"]}


def _gap_or_reason(cell: dict, gaps: pl.DataFrame, system: str, reference: str, language: str, metric: str) -> None:
    """Like for like: the gap where every condition matches, else which conditions differ (from REPORT_GAPS)."""
    hit = gaps.filter((pl.col("system") == system) & (pl.col("reference") == reference)
                      & (pl.col("language") == language) & (pl.col("metric") == metric))
    if hit.height == 0:
        return
    rec = hit.row(0, named=True)
    if rec["comparable"]:
        cell["gap"] = rec["gap"]
    else:
        cell["no_gap"] = f"no gap: {rec['differs']}"


def other_measured(a: Analysis) -> list[str]:
    """Measured systems with MIRACL results besides the focus and BM25 (e.g. the base of a fine-tune)."""
    miracl = a.scores.filter((pl.col("kind") == "measured") & (pl.col("benchmark") == "miracl"))
    return [s for s in miracl["system"].unique(maintain_order=True).to_list()
            if s != a.focus and s in a.systems and not a.systems[s].lexical and not a.systems[s].replica]


def _lexical(a: Analysis) -> str | None:
    return next((s for s, f in a.systems.items() if f.lexical and s in set(a.scores["system"])), None)


def reference_columns(a: Analysis) -> list[str]:
    labels = set(a.scores.filter(pl.col("kind") != "measured")["system"]) | ({MEASURED_BM25} if _lexical(a) else set())
    return [r for r in shown_references(a.references) if r != a.focus and r in labels]


def _table_rows(a: Analysis, source_ids: dict[str, int], comparisons: pl.DataFrame | None = None
                ) -> tuple[list[str], list[dict]]:
    """Per MIRACL language: the focus cell and one cell per column (other measured systems, references),
    each with the gap of the focus system where comparable, else the conditions that differ."""
    bm25 = _lexical(a)
    columns = other_measured(a) + reference_columns(a)
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
                    if ref in a.systems:  # a system measured here: its paired comparison is in the measured tables
                        cell["no_gap"] = "measured here: see the paired differences above"
                    else:
                        _gap_or_reason(cell, a.gaps, a.focus, ref, code, metric)
                refs.append(cell)
            row["metrics"][metric] = {"model": model, "refs": refs}
        rows.append(row)
    return columns, rows


def _mteb_table(a: Analysis, source_ids: dict[str, int]) -> tuple[list[str], list[dict]]:
    mteb = a.scores.filter((pl.col("kind") == "mteb") & (pl.col("metric") == NDCG_AT_10))
    systems = mteb["system"].unique().sort().to_list()
    rows = []
    for fact in a.languages:
        cells = []
        model = table_cell(a.scores, a.focus, fact["code"], NDCG_AT_10, {})
        for system in systems:
            cell = table_cell(a.scores, system, fact["code"], NDCG_AT_10, source_ids)
            if cell and model:
                _gap_or_reason(cell, a.gaps, a.focus, system, fact["code"], NDCG_AT_10)
            cells.append(cell)
        rows.append({**fact, "cells": cells})
    return systems, rows


def delta_words(c: dict) -> str:
    """'▲ +8.1 [+5.0, +11.2]': ▲ / ▼ = significantly higher / lower after Holm (the shown interval excludes
    0), ≈ = not; the sign is a symbol too, never colour alone."""
    if c.get("ci_low") is None:
        return f"{c['delta']:+.1f}"
    mark = ("\u25b2" if c["delta"] > 0 else "\u25bc") if c["significant"] else "\u2248"
    return f"{mark} {c['delta']:+.1f} [{c['ci_low']:+.1f}, {c['ci_high']:+.1f}]"


def detail_words(c: dict) -> str:
    """The second line of a difference cell: level, test, and what could not have been detected."""
    if c.get("p_holm") is None:
        return ""
    words = (f"{100 * c['confidence']:.1f}% interval (Holm step, family of {c['holm_family_size']}), "
             f"p<sub>Holm</sub> = {c['p_holm']:.3g}, n = {c['n']}")
    if c.get("n_clusters") is not None and c["n_clusters"] < c["n"]:
        words += f" in {c['n_clusters']} clusters"
    if not c["significant"]:
        words += (f"; could detect only about \u00b1{c['mdd']:.1f} or more (80% power)" if c["mdd"] >= 0.05 else
                  "; the two systems scored every query alike: no difference could show")
    if c.get("seed_deltas"):
        words += f"; per training seed: {c['seed_deltas']}"
    return words


CAUSE_WORDS = {measured_mod.TRAINING_DATA: "what the training data did", measured_mod.INPUT_FORMAT:
               "what the input format did, same weights", measured_mod.SYSTEM: "system against system"}


def _task_label(benchmark: str) -> str:
    return {"miracl": "MIRACL", "xquad": "XQuAD", "tatoeba": "Tatoeba", "beir": "BEIR"}.get(benchmark, benchmark)


def measured_sections(m: measured_mod.Measured, registry: Registry, focus: str) -> list[dict]:
    """One section per (benchmark, task, corpus, split, metric): rows per language and dataset, one cell per
    system, and one column per difference that isolates one cause (:meth:`Measured.shown_pairs`)."""
    sections = []
    # the first screen shows the headline metrics; every other metric mteb reports stays in measured.csv
    shown = (*METRICS, F1, ACCURACY)
    table = m.table.filter(pl.col("metric").is_in(shown)).with_columns(
        pl.col("tier").replace_strict(TIER_RANK, default=3, return_dtype=pl.Int64).alias("_rank"))
    all_pairs = m.shown_pairs(focus)
    causes = {(r["system_a"], r["system_b"]): r["cause"] for r in m.comparisons.iter_rows(named=True)}
    for (benchmark, task, corpus, split, metric), part in table.group_by(
            ["benchmark", "task", "corpus", "split", "metric"], maintain_order=True):
        systems = [s for s in m.systems if s in set(part["system"])]
        pairs = [(a, b) for a, b in all_pairs if a in systems and b in systems]
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
                    deltas.append({**c, "words": delta_words(c), "detail": detail_words(c)})
                elif a in cells and b in cells:
                    d = {"delta": cells[b]["value"] - cells[a]["value"], "ci_low": None, "significant": None}
                    deltas.append({**d, "words": delta_words(d) + " (no per-query scores: untested)", "detail": ""})
                else:
                    deltas.append(None)
            lang = registry.get(language)
            n_docs = next((c["n_docs"] for c in cells.values() if c["n_docs"] is not None), None)
            rows.append({"language": language, "name": lang.name, "tier": lang.tier, "dataset": dataset,
                         "cells": [cells.get(s) for s in systems], "deltas": deltas,
                         "n": next((c["n_queries"] for c in cells.values() if c["n_queries"] is not None), None),
                         "ceiling": measured_mod.cannot_discriminate(metric, [c["value"] for c in cells.values()], n_docs)})
        first = part.row(0, named=True)
        sections.append({"task": task, "benchmark": benchmark, "label": _task_label(benchmark), "corpus": corpus,
                         "task_kind": first["task_kind"],
                         "corpus_words": conditions.CORPUS_WORDS.get(corpus, corpus), "split": split, "metric": metric,
                         "metric_label": metric_label(metric), "systems": systems,
                         "system_notes": [_system_note(m, s, part) for s in systems],
                         "pairs": [f"{b} \u2212 {a}" for a, b in pairs], "pair_keys": pairs,
                         "pair_causes": [CAUSE_WORDS.get(causes.get(p, ""), "") for p in pairs], "rows": rows,
                         "revision": first["revision"], "ceiling": _section_ceiling(rows, metric_label(metric)),
                         "id": f"measured-{task}-{corpus}-{metric}".replace(" ", "_").replace(".", "_")})
    order = {"miracl": 0, "tatoeba": 2}
    return sorted(sections, key=lambda sec: (order.get(sec["benchmark"], 1), sec["task"], sec["metric"] != NDCG_AT_10))


def _section_ceiling(rows: list[dict], label: str) -> str | None:
    """When the metric cannot discriminate on any dataset of a section: the note the folded section carries."""
    if not rows or not all(r["ceiling"] for r in rows):
        return None
    reasons = sorted({r["ceiling"] for r in rows})
    if len(reasons) == 1:
        return f"{label} cannot tell these systems apart on any dataset here: {reasons[0]}."
    return (f"{label} cannot tell these systems apart on any dataset here: "
            + "; ".join(f"{r['dataset']}: {r['ceiling']}" for r in rows) + ".")


def main_result(sections: list[dict], m: measured_mod.Measured, focus: str) -> dict:
    """The first screen: per task and language, every measured system on the task's primary metric (nDCG@10
    for retrieval, accuracy for bitext mining; a task without it leads with its first metric) with its 95%
    interval, and the one difference that answers "what changed" (what the training data did, where the
    base was measured under the focus system's contract; else the first shown pair with the focus system)
    with its interval and mark. Cells and differences are the measured sections' own (no new numbers)."""
    by_task: dict[tuple, dict] = {}
    for sec in sections:
        key = (sec["task"], sec["corpus"])
        primary = conditions.PRIMARY_METRIC.get(sec["task_kind"])
        if key not in by_task or (sec["metric"] == primary and by_task[key]["metric"] != primary):
            by_task[key] = sec
    chosen = [sec for sec in sections if by_task.get((sec["task"], sec["corpus"])) is sec]
    shown = [p for p in m.shown_pairs(focus) if focus in p]
    pair = shown[0] if shown else None
    cause = None
    if pair is not None:
        hit = m.comparisons.filter((pl.col("system_a") == pair[0]) & (pl.col("system_b") == pair[1]))
        cause = CAUSE_WORDS.get(hit["cause"][0], hit["cause"][0]) if hit.height else None
    systems = [s for s in m.systems if any(s in sec["systems"] for sec in chosen)]
    rows = []
    for sec in chosen:
        j = sec["pair_keys"].index(pair) if pair in sec["pair_keys"] else None
        for row in sec["rows"]:
            cells = [row["cells"][sec["systems"].index(s)] if s in sec["systems"] else None for s in systems]
            rows.append({"task": sec["label"], "corpus_words": sec["corpus_words"], "metric_label": sec["metric_label"],
                         "section_id": sec["id"], "language": row["language"], "name": row["name"],
                         "tier": row["tier"], "dataset": row["dataset"], "n": row["n"], "cells": cells,
                         "delta": row["deltas"][j] if j is not None else None, "ceiling": row["ceiling"]})
    return {"systems": systems, "focus": focus, "rows": rows, "cause": cause,
            "pair": f"{pair[1]} \u2212 {pair[0]}" if pair else None,
            "tasks": list(dict.fromkeys(f"{sec['label']} ({sec['corpus_words']})" for sec in chosen)),
            "metrics": list(dict.fromkeys(sec["metric_label"] for sec in chosen)),
            "languages": list(dict.fromkeys(r["language"] for r in rows))}


def measured_lede(m: measured_mod.Measured, cards: list, focus: str) -> dict:
    """The one line above the main result: which run, which systems and models, and a compact training-size
    warning (the full one is on the training card)."""
    card = next((c for c in cards if c.system == focus), None)
    models = {s: measured_mod.display_path(str(m.facts[s].model)) for s in m.systems if s in m.facts}
    tiny = card is not None and card.records is not None and card.records < measured_mod.TINY_TRAINING_SET
    return {"systems": m.systems, "models": models, "card": card, "tiny": tiny,
            "recipe_records": "~500k"}


def _system_note(m: measured_mod.Measured, system: str, part: pl.DataFrame) -> str:
    """How a system ran on a section: instruction, max_length, contract; and its training seeds."""
    rec = part.filter(pl.col("system") == system).row(0, named=True)
    facts = m.facts.get(system)
    if facts is not None and facts.lexical:
        return "lexical (BM25)"
    words = [conditions.instruction_words(rec["instruction"])]
    if rec["max_length"]:
        words.append(f"max_length {rec['max_length']}")
    if rec["contract_from"]:
        words.append("base weights under the trained model's contract")
    if rec["n_seeds"] and rec["n_seeds"] > 1:
        words.append(f"{rec['n_seeds']} training seeds")
    return ", ".join(words)


def significance_lines(m: measured_mod.Measured, focus: str) -> list[str]:
    """Per shown pair of systems, task and metric: how many languages moved significantly (Holm), and which."""
    lines = []
    if m.comparisons.height == 0:
        return lines
    shown = set(m.shown_pairs(focus))
    # the headline metric of each kind of task leads; the tables below carry every metric
    comparisons = m.comparisons.filter(pl.col("metric").is_in([NDCG_AT_10, ACCURACY])
                                       & pl.struct("system_a", "system_b").map_elements(
                                           lambda r: (r["system_a"], r["system_b"]) in shown, return_dtype=pl.Boolean))
    for (a, b, task, metric), part in comparisons.group_by(["system_a", "system_b", "task", "metric"], maintain_order=True):
        up = part.filter(pl.col("significant") & (pl.col("delta") > 0))["language"].to_list()
        down = part.filter(pl.col("significant") & (pl.col("delta") < 0))["language"].to_list()
        flat = part.filter(~pl.col("significant"))
        words = []
        if up:
            words.append(f"higher on {len(up)} ({', '.join(up)})")
        if down:
            words.append(f"lower on {len(down)} ({', '.join(down)})")
        if flat.height:
            detect = ", ".join(f"{r['language']} \u00b1{r['mdd']:.1f}" if r["mdd"] >= 0.05 else
                               f"{r['language']} (every query alike)" for r in flat.iter_rows(named=True))
            words.append(f"no significant difference on {flat.height}, where only differences of about {detect} or more "
                         "could be detected")
        cause = CAUSE_WORDS.get(part["cause"][0], part["cause"][0])
        lines.append(f"{b} \u2212 {a} ({cause}) on {task} {metric_label(metric)}, "
                     f"{part.height} language(s), Holm family = these {part.height}: {'; '.join(words)}.")
    return lines


def tatoeba_rows(m: measured_mod.Measured, audit: pl.DataFrame | None, cards: list, refs: References,
                 focus: str, registry: Registry, source_ids: dict[str, int]) -> list[dict]:
    """Per language with bitext results: the audit row, what the training data did (trained minus the base
    under the trained contract) with its interval, published MTEB."""
    bitext = m.table.filter(pl.col("task_kind") == conditions.BITEXT)
    if bitext.height == 0:
        return []
    audited = {r["language"]: r for r in audit.iter_rows(named=True)} if audit is not None else {}
    trained = next((c for c in cards if c.system == focus), None)
    data_pairs = m.comparisons.filter((pl.col("task").is_in(bitext["task"].unique().to_list()))
                                      & (pl.col("cause") == measured_mod.TRAINING_DATA) & (pl.col("system_b") == focus))
    base = data_pairs["system_a"][0] if data_pairs.height else None
    rows = []
    # precision/recall stay in measured.csv; the metric with per-pair intervals leads
    with_ci = set(bitext.filter(pl.col("ci_low").is_not_null())["metric"])
    metrics = sorted((x for x in (F1, ACCURACY) if x in set(bitext["metric"])), key=lambda x: (x not in with_ci, x != F1))
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
                hit = data_pairs.filter((pl.col("language") == language) & (pl.col("metric") == metric))
                if hit.height:
                    change = hit.row(0, named=True)
                elif base in values and focus in values:
                    change = {"delta": values[focus]["value"] - values[base]["value"], "ci_low": None, "significant": None}
            published = []
            for rec in refs.tatoeba.filter((pl.col("language") == language) & (pl.col("metric") == metric)).iter_rows(named=True):
                published.append({"reference": rec["reference"], "value": rec["value"],
                                  "source": source_ids.setdefault(rec["provenance"], len(source_ids) + 1)})
            label = metric_label(metric)
            if change is None:
                sentence = (f"{label}: no base model measured under {focus}'s contract, so what the training data did "
                            "is not isolated here.")
            elif change.get("ci_low") is None:
                sentence = f"{label} {change['delta']:+.1f} from the training data (no per-query scores: no interval, untested)."
            elif change["significant"]:
                sentence = (f"{label} {delta_words(change)} from the training data (trained minus {base}; significant, "
                            f"Holm-corrected p = {change['p_holm']:.3g}).")
            else:
                sentence = (f"{label} {delta_words(change)} from the training data (trained minus {base}; not "
                            f"significant, Holm-corrected p = {change['p_holm']:.3g}; only a change of about "
                            f"\u00b1{change['mdd']:.1f} or more could have been detected).")
            if change is not None and change.get("seed_deltas"):
                sentence += f" Per training seed: {change['seed_deltas']}."
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
    first.setdefault("alerts", first["warnings"])
    first.setdefault("main", {"rows": [], "systems": [], "pair": None})
    first.setdefault("lede", {})
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
        "metrics": METRICS, "groups": a.groups.to_dicts(), "group_names": GROUPS,
        "between": a.between, "headline": a.headline, "data_miracl": data_rows[: len(a.languages)],
        "data_other": data_rows[len(a.languages):], "mteb_systems": mteb_systems, "mteb_rows": mteb_rows,
        "other": other, "averages": averages, "sources": sources, "plots": plots, "inputs": inputs,
        "notes": a.notes, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "reference_dir": measured_mod.display_path(str(a.references.directory)), "measured_bm25": MEASURED_BM25,
        "mteb_all": set(a.scores.filter(pl.col("kind") == "mteb")["system"].to_list()),
        "mteb_hard": set(a.scores.filter((pl.col("kind") == "mteb") & (pl.col("corpus") != conditions.FULL))["system"].to_list()),
        "focus_corpus": conditions.CORPUS_WORDS.get(a.focus_corpus, a.focus_corpus), "regimes": _regimes(a),
        "tiers": a.tiers.to_dicts(), **first,
    }
    env = template_env()
    return env.get_template("gap_report.html.j2").render(**context), env.get_template("summary.md.j2").render(**context)


def _regimes(a: Analysis) -> list[dict]:
    """Each reference label with the conditions its numbers were measured under, for the like-for-like legend
    (the regime per language: supervised where the model saw MIRACL train for it, zero-shot on de and yo)."""
    refs = a.scores.filter(pl.col("kind") != "measured")
    rows = []
    for (label,), part in refs.group_by(["system"], maintain_order=True):
        rec = part.row(0, named=True)
        regimes = part.group_by("regime").agg(pl.col("language").unique().sort()).sort("regime")
        words = "; ".join(f"{r['regime']}: {', '.join(r['language'])}" if len(regimes) > 1 else r["regime"]
                          for r in regimes.iter_rows(named=True))
        versions = ", ".join(sorted({v for v in part["version"].to_list() if v}))
        rows.append({"reference": label, "corpus": conditions.CORPUS_WORDS.get(rec["corpus"], rec["corpus"]),
                     "instruction": conditions.instruction_words(rec["instruction"]),
                     "max_length": rec["max_length"] or "not stated", "regime": words, "version": versions,
                     "disputed": ", ".join(sorted(set(part.filter(pl.col("disputed"))["language"])))})
    return rows


def write_table(out: Path, name: str, df: pl.DataFrame, schema: Schema) -> dict[str, int]:
    table = conform(df, schema, where=str(out / f"{name}.parquet"))
    buffer = io.BytesIO()
    table.write_parquet(buffer, compression="zstd")
    atomic_write_bytes(out / f"{name}.parquet", buffer.getvalue())
    text = io.StringIO()
    table.write_csv(text)
    atomic_write_bytes(out / f"{name}.csv", text.getvalue().encode("utf-8"))
    return {f"{name}.parquet": table.height, f"{name}.csv": table.height}
