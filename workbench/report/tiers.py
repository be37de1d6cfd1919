"""The tier question with inference: do low-resource languages trail high-resource ones, and by how much?

Per benchmark (and corpus) the focus system was measured on, on the one metric fixed in advance for
its task kind (:data:`workbench.conditions.PRIMARY_METRIC`: nDCG@10 for retrieval, accuracy for
bitext mining): the mean score over the high-tier languages minus the mean over the low-tier ones,
with a 95% two-level bootstrap interval (languages resampled within each tier, then queries or
clusters within each language; :func:`workbench.stats.tier_difference`).

Answers: ``yes`` only when the interval lies above zero, ``no`` when it lies below (the low tier is
ahead), ``cannot say`` when it includes zero or when a tier has fewer than :data:`MIN_LANGUAGES`
languages with per-query scores (MIRACL's low tier is Yoruba alone, so MIRACL alone always gets
"cannot say"). Registry tiers: CC-100 size, high >= 1B tokens, low < 100M.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import polars as pl

from workbench import conditions, stats
from workbench.languages import Registry
from workbench.metrics import metric_label
from workbench.tables import REPORT_TIERS, conform

# A tier needs this many languages for its mean to be resampled at all meaningfully.
MIN_LANGUAGES = 3
YES, NO, CANNOT_SAY = "yes", "no", "cannot say"


def too_few_languages(tiers: Mapping[str, Collection[str]], *, what: str = "with per-query scores",
                      also: Sequence[str] = ()) -> str | None:
    """Why a two-level bootstrap over ``tiers`` (tier -> its languages) cannot say anything, in words, or
    None when every tier holds at least :data:`MIN_LANGUAGES` languages. The one rule for every tier
    contrast of the report (this tier question, the passkey section, the compare view); ``also``: further
    reasons, said only when a tier is short."""
    short = [f"the {tier} tier holds {len(codes)} language(s) {what}"
             f"{' (' + ', '.join(sorted(codes)) + ')' if codes else ''}"
             for tier, codes in tiers.items() if len(codes) < MIN_LANGUAGES]
    if not short:
        return None
    return f"{' and '.join([*short, *also])}; the two-level bootstrap needs at least {MIN_LANGUAGES} per tier"


def tier_question(results: pl.DataFrame, per_query: pl.DataFrame, registry: Registry, focus: str) -> pl.DataFrame:
    """REPORT_TIERS rows for ``focus``: one per (benchmark, task, corpus) it was measured on."""
    measured = results.filter(pl.col("system") == focus)
    rows = []
    for (benchmark, task, corpus, kind), part in measured.group_by(
            ["benchmark", "task", "corpus", "task_kind"], maintain_order=True):
        metric = conditions.PRIMARY_METRIC[kind]
        scored = per_query.filter((pl.col("system") == focus) & (pl.col("task") == task) & (pl.col("metric") == metric)
                                  & pl.col("dataset").is_in(part["dataset"].unique().to_list()))
        by_language: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for (language,), lang_part in scored.group_by(["language"], maintain_order=True):
            # one dataset per language: the one with most queries
            dataset = lang_part.group_by("dataset").len().sort("len", descending=True)["dataset"][0]
            one = lang_part.filter(pl.col("dataset") == dataset)
            by_language[language] = (one["score"].to_numpy(), one["cluster"].to_numpy())
        tiers = {"high": {c: v for c, v in by_language.items() if registry.get(c).tier == "high"},
                 "low": {c: v for c, v in by_language.items() if registry.get(c).tier == "low"}}
        base = {"benchmark": benchmark, "task": task, "corpus": corpus, "metric": metric, "system": focus,
                "n_high": len(tiers["high"]), "n_low": len(tiers["low"]),
                "languages_high": ",".join(sorted(tiers["high"])), "languages_low": ",".join(sorted(tiers["low"]))}
        unscored = sorted(set(part["language"]) - set(by_language))
        short = too_few_languages(tiers, also=[f"{len(unscored)} language(s) were measured without per-query scores "
                                               "(copied or older results)"] if unscored else [])
        if short:
            rows.append({**base, "difference": None, "ci_low": None, "ci_high": None, "answer": CANNOT_SAY,
                         "why": short})
            continue
        got = stats.tier_difference(tiers["high"], tiers["low"], rng=np.random.default_rng(stats._seed(focus, task, corpus)))
        answer = YES if got.low > 0 else NO if got.high < 0 else CANNOT_SAY
        why = {YES: "the interval lies above zero", NO: "the interval lies below zero: the low tier is ahead",
               CANNOT_SAY: "the interval includes zero"}[answer]
        rows.append({**base, "difference": got.difference, "ci_low": got.low, "ci_high": got.high, "answer": answer,
                     "why": why})
    return conform(pl.DataFrame(rows, schema=REPORT_TIERS), REPORT_TIERS, where="report tiers")


def headline(tiers: pl.DataFrame, focus: str) -> list[str]:
    """Sentences answering the tier question from REPORT_TIERS, the answered benchmarks first."""
    lines = []
    if tiers.height == 0:
        return [f"Cannot say for {focus}: it has no measured numbers with per-query scores."]
    ordered = tiers.sort(pl.col("answer") == CANNOT_SAY, "benchmark")
    for rec in ordered.iter_rows(named=True):
        what = f"{rec['benchmark']} ({rec['task']}, {conditions.CORPUS_WORDS.get(rec['corpus'], rec['corpus'])}), " \
               f"{metric_label(rec['metric'])}"
        if rec["difference"] is None:
            lines.append(f"Cannot say on {what}: {rec['why']}.")
            continue
        interval = f"{rec['difference']:+.1f} points [{rec['ci_low']:+.1f}, {rec['ci_high']:+.1f}]"
        over = (f"95% two-level bootstrap over {rec['n_high']} high-tier ({rec['languages_high']}) and "
                f"{rec['n_low']} low-tier languages ({rec['languages_low']}), then queries within each")
        if rec["answer"] == YES:
            lines.append(f"Yes, on {what}: {focus}'s low-tier languages trail its high-tier ones by {interval} "
                         f"(high minus low; {over}).")
        elif rec["answer"] == NO:
            lines.append(f"No, on {what}: {focus}'s low-tier languages are ahead of its high-tier ones, "
                         f"high minus low {interval} ({over}).")
        else:
            lines.append(f"Cannot say on {what}: high minus low is {interval}, an interval that includes zero ({over}).")
    if not (tiers["answer"] != CANNOT_SAY).any() and not tiers["difference"].is_not_null().any():
        lines.insert(0, f"Cannot say whether {focus} leaves low-resource languages behind: no task measured here has "
                        f"at least {MIN_LANGUAGES} languages with per-query scores in both the high and the low tier.")
    return lines
