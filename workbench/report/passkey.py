"""The report's passkey section: per-language accuracy by context length, the effective length in
tokens and in words, and a tier contrast of the effective length with a two-level bootstrap interval.

Input: the passkey rows of EVAL_RESULTS (``task == PersonalizedPasskeyRetrieval``; the words and
characters per document) and their per-query 0/100 scores in EVAL_PER_QUERY. Every accuracy here is
a mean of per-query scores, so :func:`passkey_cells` recomputes the section from ``per_query.parquet``.

Definitions (also printed in the section):

* accuracy at a length: the mean over all queries at that length, every depth pooled (each depth has
  the same number of queries); 95% interval over those queries (per-query scores are 0/100: Clopper-Pearson,
  as for every binary score, :func:`workbench.stats.value_interval`);
* first failing length: the shortest measured length whose accuracy is below 90%, in tokens and in
  the median words of that language's documents there ("not reached" if none fails);
* effective length: the longest measured length before the first failing one (0 when the shortest
  already fails; the longest measured when none fails: then a lower bound, marked "≥");
* tier contrast: mean effective length of a tier minus that of the high tier (tokens and words),
  its interval from a two-level bootstrap: languages resampled within each tier, then queries
  within each of the sampled languages' lengths; "cannot say" with the languages per tier when
  either tier holds fewer than :data:`workbench.report.tiers.MIN_LANGUAGES` (the report's one rule).

Pooling follows the conditions (:mod:`workbench.conditions`): the depths of a length, the lengths of a
language's curve and the languages of a setting pool only rows whose condition columns agree. A
setting is one system, RoPE base, window, instruction and max_length; within it, a language whose rows
were measured on more than one set of documents (dataset or revision) gets one curve per set, each
named, and is left out of the tier contrast (the section says which condition differs).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from workbench import conditions, stats
from workbench.eval.passkey import TASK_NAME
from workbench.languages import Registry
from workbench.report.tiers import CANNOT_SAY, MIN_LANGUAGES, too_few_languages
from workbench.tables import EVAL_CELL_KEY, REPORT_PASSKEY, conform

THRESHOLD = 90.0  # percent: "the length at which accuracy first falls below 90%"
N_RESAMPLES = 2_000  # two-level bootstrap draws of the tier contrast
TIER_ORDER = {"high": 0, "mid": 1, "low": 2}
# One chart and table per setting: how the system ran (every language of a setting ran the same way).
SETTING = ("system", "rope_theta", "sliding_window", "instruction", "max_length")
# One curve per language and set of documents within a setting: the data conditions and the regime.
CURVE = ("dataset", *conditions.DATA_CONDITIONS, "regime")


def _seed(*parts: object) -> int:
    return zlib.crc32("\x1f".join(map(str, parts)).encode("utf-8"))


def _setting_label(system: str, rope: float | None, window: int | None) -> str:
    extra = [f"RoPE base {rope:g}" if rope is not None else "", f"window {window}" if window is not None else ""]
    extra = [e for e in extra if e]
    return f"{system} ({', '.join(extra)})" if extra else system


def without_passkey(results: pl.DataFrame, per_query: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows every other report section reads (one value per system, dataset, language and metric)."""
    return results.filter(pl.col("task") != TASK_NAME), per_query.filter(pl.col("task") != TASK_NAME)


def _scored(results: pl.DataFrame, per_query: pl.DataFrame) -> pl.DataFrame:
    """The passkey per-query scores with the condition columns of their results row (per-query rows
    carry the cell key only)."""
    on = ["system", "model", "task", "dataset", "language", "split", "metric", *EVAL_CELL_KEY]
    facts = results.filter(pl.col("task") == TASK_NAME).select(*on, *(c for c in conditions.CONDITIONS if c not in on))
    return per_query.filter(pl.col("task") == TASK_NAME).join(facts, on=on, how="left", nulls_equal=True)


def passkey_cells(results: pl.DataFrame, per_query: pl.DataFrame, registry: Registry) -> pl.DataFrame:
    """REPORT_PASSKEY: per setting, language, set of documents and length, accuracy over all depths
    (``needle_depth`` null) and per depth, each a mean of per-query scores with its 95% interval; rows
    pooled only where their condition columns agree."""
    rows = []
    facts = results.filter(pl.col("task") == TASK_NAME)
    scores = _scored(results, per_query)
    if facts.height == 0 or scores.height == 0:
        return pl.DataFrame(schema=REPORT_PASSKEY)
    keys = ["system", "model", "dataset", "language", "rope_theta", "sliding_window", *conditions.CONDITIONS,
            "context_tokens"]
    for key, part in scores.group_by(keys, maintain_order=True):
        rec = dict(zip(keys, key))
        fact = facts.filter(*[pl.col(k).eq_missing(rec[k]) for k in keys])
        groups = [(None, part)] + [(d, p) for (d,), p in part.group_by(["needle_depth"], maintain_order=True)]
        for depth, sub in sorted(groups, key=lambda g: -1 if g[0] is None else g[0]):
            values = sub["score"].to_numpy()
            # 0/100 scores: the exact binomial interval (stats.value_interval), which covers near 0 and 100
            # where a percentile bootstrap collapses to a point
            interval = stats.value_interval(values, rng=np.random.default_rng(_seed(*key, depth)))
            low, high = interval.low, interval.high
            cells = fact if depth is None else fact.filter(pl.col("needle_depth") == depth)
            words = cells["context_words_median"].drop_nulls()
            rows.append({
                **rec, "tier": registry.get(rec["language"]).tier, "needle_depth": depth,
                "accuracy": float(values.mean()), "ci_low": low, "ci_high": high, "n_queries": int(values.size),
                "context_chars_median": float(cells["context_chars_median"].median()) if cells.height else None,
                "context_words_median": float(words.median()) if words.len() else None,
                "needle_template": cells["needle_template"][0] if cells.height else None,
                "needle_names": cells["needle_names"][0] if cells.height else None,
            })
    table = pl.DataFrame(rows, schema=REPORT_PASSKEY)
    return conform(table.sort("system", "language", "context_tokens", "needle_depth", nulls_last=False),
                   REPORT_PASSKEY, where="report passkey")


def effective_index(accuracy: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Per row of ``accuracy`` (draws x lengths, ascending lengths): the index of the first length
    below ``threshold``, or ``lengths`` when none is (vectorised over bootstrap draws)."""
    below = accuracy < threshold
    return np.where(below.any(axis=1), below.argmax(axis=1), accuracy.shape[1])


@dataclass
class LanguageCurve:
    language: str
    name: str
    tier: str
    lengths: list[int]  # tokens, ascending
    words: list[float | None]  # median words of the documents at each length
    accuracy: list[float]
    ci_low: list[float]
    ci_high: list[float]
    scores: list[np.ndarray]  # per length: every query's score (all depths)
    first_fail: int | None = None  # index into lengths
    template: str = ""
    names: str = ""
    documents: dict[str, Any] = field(default_factory=dict)  # the CURVE columns: dataset and data conditions
    variant: str = ""  # set where the language has several curves in one setting: which documents this one is

    def effective(self) -> tuple[int, float | None, bool]:
        """(tokens, words, lower bound?) of the effective length."""
        index = len(self.lengths) if self.first_fail is None else self.first_fail
        if index == 0:  # no words either where the language has no word counts (scripts without spaces)
            return 0, None if all(w is None for w in self.words) else 0.0, False
        return self.lengths[index - 1], self.words[index - 1], self.first_fail is None


@dataclass
class Setting:
    label: str
    system: str
    curves: list[LanguageCurve]
    contrasts: list[dict] = field(default_factory=list)
    plot: str = ""
    not_pooled: list[str] = field(default_factory=list)  # languages measured on several sets of documents, in words

    @property
    def lengths(self) -> list[int]:
        """Every length measured in this setting (a curve may lack some: a needle that did not fit)."""
        return sorted({n for c in self.curves for n in c.lengths})


def _matches(frame: pl.DataFrame, values: dict[str, Any]) -> pl.DataFrame:
    return frame.filter(*[pl.col(k).eq_missing(v) for k, v in values.items()])


def _curves(cells: pl.DataFrame, scored: pl.DataFrame, registry: Registry, setting: dict[str, Any]) -> list[LanguageCurve]:
    mine = _matches(cells, setting).filter(pl.col("needle_depth").is_null())
    scores = _matches(scored, setting)
    curves = []
    for key, part in mine.sort("context_tokens").group_by(["language", *CURVE], maintain_order=True):
        language, documents = key[0], dict(zip(CURVE, key[1:]))
        lang = registry.get(language)
        lengths = part["context_tokens"].to_list()
        mine_scores = _matches(scores, {"language": language, **documents})
        per_length = [mine_scores.filter(pl.col("context_tokens") == n)["score"].to_numpy() for n in lengths]
        accuracy = part["accuracy"].to_list()
        below = [i for i, a in enumerate(accuracy) if a < THRESHOLD]
        curves.append(LanguageCurve(language, lang.name, lang.tier, lengths, part["context_words_median"].to_list(),
                                    accuracy, part["ci_low"].to_list(), part["ci_high"].to_list(), per_length,
                                    below[0] if below else None, part["needle_template"][0] or "",
                                    part["needle_names"][0] or "", documents))
    return sorted(curves, key=lambda c: (TIER_ORDER.get(c.tier, 3), c.language))


def _not_pooled(curves: list[LanguageCurve]) -> list[str]:
    """Name each curve of a language measured on several sets of documents (``variant``) and say, per
    such language, which conditions differ; those languages stay out of the tier contrast."""
    by_language: dict[str, list[LanguageCurve]] = {}
    for curve in curves:
        by_language.setdefault(curve.language, []).append(curve)
    notes = []
    for language, several in by_language.items():
        if len(several) < 2:
            continue
        differ = [c for c in CURVE if len({curve.documents[c] for curve in several}) > 1]
        for curve in several:
            curve.variant = "; ".join(f"{c.replace('_', ' ')} {curve.documents[c]}" for c in differ)
        first = several[0].documents
        words = "; ".join(conditions.difference_words(c, first, other.documents)
                          for c in differ for other in several[1:])
        notes.append(f"{language}: {len(several)} sets of documents ({words}): not pooled, each on its own row, "
                     "and left out of the tier contrast")
    return notes


def _draws(curve: LanguageCurve, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per bootstrap draw (queries resampled within each length): effective length in tokens and words."""
    accuracy = np.stack([s[rng.integers(0, s.size, size=(n, s.size))].mean(axis=1) for s in curve.scores], axis=1)
    index = effective_index(accuracy)
    tokens = np.array([0, *curve.lengths], dtype=float)[index]
    no_words = all(w is None for w in curve.words)
    words = np.array([np.nan if no_words else 0.0, *[np.nan if w is None else w for w in curve.words]], dtype=float)[index]
    return tokens, words


def tier_contrasts(curves: list[LanguageCurve], *, seed: int = 0, n_resamples: int = N_RESAMPLES) -> list[dict]:
    """Each tier's mean effective length minus the high tier's, in tokens and words, with a 95%
    two-level bootstrap interval (languages within tiers, then queries within languages); ``answer``
    "cannot say" and no difference where either tier holds too few languages (``why`` says how many,
    :func:`workbench.report.tiers.too_few_languages`). ``curves``: one per language."""
    by_tier: dict[str, list[LanguageCurve]] = {}
    for curve in curves:
        by_tier.setdefault(curve.tier, []).append(curve)
    by_tier.setdefault("high", [])  # no high-tier language: every contrast says it cannot say, and why
    rng = np.random.default_rng(seed)
    draws = {c.language: _draws(c, rng, n_resamples) for c in curves}

    def tier_means(tier: str, unit: int) -> tuple[float, np.ndarray, int]:
        members = [c for c in by_tier[tier] if unit == 0 or c.effective()[1] is not None]
        if not members:
            return float("nan"), np.full(n_resamples, np.nan), 0
        observed = float(np.mean([c.effective()[unit] for c in members]))
        stacked = np.stack([draws[c.language][unit] for c in members])  # languages x draws
        picks = rng.integers(0, len(members), size=(n_resamples, len(members)))  # languages resampled per draw
        resampled = stacked[picks, np.arange(n_resamples)[:, None]].mean(axis=1)
        return observed, resampled, len(members)

    rows = []
    for tier in sorted(by_tier, key=lambda t: TIER_ORDER.get(t, 3)):
        if tier == "high":
            continue
        row: dict[str, Any] = {"tier": tier, "against": "high"}
        for unit, name in ((0, "tokens"), (1, "words")):
            hi, hi_draws, n_hi = tier_means("high", unit)
            lo, lo_draws, n_lo = tier_means(tier, unit)
            difference = lo_draws - hi_draws
            ok = np.isfinite(difference)
            interval = (np.percentile(difference[ok], [2.5, 97.5]).tolist() if ok.any() and n_hi and n_lo
                        else [None, None])
            languages = [c.language for c in by_tier[tier] if unit == 0 or c.effective()[1] is not None]
            high_languages = [c.language for c in by_tier["high"] if unit == 0 or c.effective()[1] is not None]
            why = too_few_languages({"high": high_languages, tier: languages},
                                    what="measured" if unit == 0 else "with word counts")
            if why:  # the draws above are still taken, so the other tiers' intervals do not depend on this one
                interval = [None, None]
            row[name] = {"high": hi, "tier": lo, "delta": lo - hi if n_hi and n_lo and not why else None,
                         "ci_low": interval[0], "ci_high": interval[1], "n_high": n_hi, "n_tier": n_lo,
                         "answer": CANNOT_SAY if why else None, "why": why,
                         "languages": languages, "high_languages": high_languages}
        rows.append(row)
    return rows


def _plot(setting: Setting) -> str:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from workbench.report.plots import _png

    styles = {"high": "-", "mid": "--", "low": ":"}
    markers = "osD^vP*X"
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for i, curve in enumerate(setting.curves):
        ax.errorbar(curve.lengths, curve.accuracy,
                    yerr=[np.subtract(curve.accuracy, curve.ci_low), np.subtract(curve.ci_high, curve.accuracy)],
                    linestyle=styles.get(curve.tier, "-."), marker=markers[i % len(markers)], capsize=3,
                    label=f"{curve.language} ({curve.tier})" + (f" {curve.variant}" if curve.variant else ""))
    ax.axhline(THRESHOLD, color="grey", linewidth=0.8)
    ax.set_xscale("log", base=2)
    lengths = setting.lengths
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_ylim(-3, 103)
    ax.set_xlabel("document length (encoder tokens)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"Passkey retrieval, {setting.label}: accuracy by length (all depths; whiskers = 95% interval; "
                 f"line = {THRESHOLD:g}%)", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="language (tier)", title_fontsize=7)
    return _png(fig)


def _how(key: dict[str, Any], keys: list[dict[str, Any]]) -> str:
    """What tells a setting from another of the same system, RoPE base and window ("" when none does)."""
    twins = [k for k in keys if k is not key and all(k[c] == key[c] for c in SETTING[:3])]
    words = []
    if any(k["max_length"] != key["max_length"] for k in twins):
        words.append(f"max_length {key['max_length'] if key['max_length'] is not None else conditions.NOT_STATED}")
    if any(k["instruction"] != key["instruction"] for k in twins):
        words.append(conditions.instruction_words(key["instruction"]))
    return f", {', '.join(words)}" if words else ""


def passkey_section(results: pl.DataFrame, per_query: pl.DataFrame, registry: Registry) -> dict | None:
    """The template context of the passkey section (None when the results hold no passkey rows), and
    the REPORT_PASSKEY table behind it."""
    cells = passkey_cells(results, per_query, registry)
    if cells.height == 0:
        return None
    scored = _scored(results, per_query)
    keys = cells.select(SETTING).unique(maintain_order=True).rows(named=True)
    settings = []
    for key in keys:
        curves = _curves(cells, scored, registry, key)
        setting = Setting(_setting_label(key["system"], key["rope_theta"], key["sliding_window"]) + _how(key, keys),
                          key["system"], curves)
        setting.not_pooled = _not_pooled(curves)
        pooled = [c for c in curves if not c.variant]
        # the seed of a setting that differs from another only in instruction or max_length names them
        seed_key = [key[c] for c in SETTING[:3]] + [key[c] for c in SETTING[3:] if _how(key, keys)]
        setting.contrasts = tier_contrasts(pooled, seed=_seed("passkey-contrast", *seed_key))
        setting.plot = _plot(setting)
        settings.append(setting)
    depths = sorted(d for d in cells["needle_depth"].unique().to_list() if d is not None)
    candidates = results.filter(pl.col("task") == TASK_NAME)["n_docs"].max()
    return {"settings": settings, "table": cells, "threshold": THRESHOLD, "depths": depths, "candidates": candidates,
            "queries": int(cells.filter(pl.col("needle_depth").is_not_null())["n_queries"].max()),
            "resamples": N_RESAMPLES, "min_languages": MIN_LANGUAGES}


__all__ = ["THRESHOLD", "effective_index", "passkey_cells", "passkey_section", "tier_contrasts", "without_passkey"]
