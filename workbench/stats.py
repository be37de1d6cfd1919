"""Uncertainty for measured scores: bootstrap intervals over queries, paired tests, Holm correction.

Input: per-query scores (EVAL_PER_QUERY: one row per system, task, dataset, language, split,
metric and ``query_id``; ``score`` in percent; the mean over a group equals the aggregate in
EVAL_RESULTS). Published numbers have no per-query data, so they never get an interval or a test.

- :func:`bootstrap_interval`: 95% percentile bootstrap interval of a mean over queries.
- :func:`paired_test`: for two systems scored on the same queries, the mean difference, its
  bootstrap interval (queries resampled together, so the pairing is kept) and a two-sided
  sign-flip randomization p-value (under "no difference", each query's difference is as likely
  to have either sign).
- :func:`holm`: Holm's step-down adjustment of a family of p-values (here: one comparison of two
  systems on one task and metric, across languages).
- :func:`intervals_table` / :func:`comparisons_table`: the same on polars frames.

Randomness is explicit: every call takes a seeded ``numpy.random.Generator``; the table helpers
derive one seed per group from the group's key, so a report rebuilt from the same inputs shows the
same intervals.

Example::

    rng = numpy.random.default_rng(0)
    low, high = bootstrap_interval([0.0, 100.0, 100.0, 50.0], rng=rng)
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
ALPHA = 0.05  # significance level after Holm correction
# Resample this many bootstrap rows at a time: 1,000 x 2,000 queries is 16 MB of indices.
_CHUNK = 1_000
GROUP_KEY = ("system", "task", "dataset", "language", "split", "metric")


def _as_array(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("scores must be a non-empty 1-D sequence")
    return values


def bootstrap_means(scores: Sequence[float] | np.ndarray, *, rng: np.random.Generator,
                    n_resamples: int = N_RESAMPLES) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement, same size) of ``scores``."""
    values = _as_array(scores)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, _CHUNK):
        stop = min(start + _CHUNK, n_resamples)
        index = rng.integers(0, values.size, size=(stop - start, values.size))
        means[start:stop] = values[index].mean(axis=1)
    return means


def bootstrap_interval(scores: Sequence[float] | np.ndarray, *, rng: np.random.Generator,
                       n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (the same definition as
    ``scipy.stats.bootstrap(..., method="percentile")``: linear-interpolated percentiles)."""
    means = bootstrap_means(scores, rng=rng, n_resamples=n_resamples)
    tail = (1 - confidence) / 2
    low, high = np.percentile(means, [100 * tail, 100 * (1 - tail)])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedResult:
    n: int  # queries scored by both systems
    mean_a: float
    mean_b: float
    delta: float  # mean(b - a), in the scores' unit
    low: float  # bootstrap interval of delta
    high: float
    p_value: float  # two-sided sign-flip randomization test, not yet corrected


def sign_flip_p_value(differences: Sequence[float] | np.ndarray, *, rng: np.random.Generator,
                      n_resamples: int = N_RESAMPLES) -> float:
    """Two-sided p-value of "mean difference = 0" by random sign flips of the per-query differences.

    ``(1 + #{|mean*| >= |mean|}) / (1 + n_resamples)``: never 0, so Holm never multiplies a zero.
    All-zero differences give 1.0.
    """
    d = _as_array(differences)
    observed = abs(d.mean())
    if not np.any(d):
        return 1.0
    # tolerance: a resample equal to the observed mean up to rounding counts as "as extreme"
    tolerance = 1e-9 * max(1.0, observed)
    extreme = 0
    for start in range(0, n_resamples, _CHUNK):
        stop = min(start + _CHUNK, n_resamples)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(stop - start, d.size))
        extreme += int(np.count_nonzero(np.abs((signs * d).mean(axis=1)) >= observed - tolerance))
    return (1 + extreme) / (1 + n_resamples)


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, rng: np.random.Generator,
                n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE) -> PairedResult:
    """Compare system B with system A on the same queries (``a[i]`` and ``b[i]`` score query i)."""
    x, y = _as_array(a), _as_array(b)
    if x.size != y.size:
        raise ValueError(f"paired scores need the same queries: {x.size} against {y.size}")
    d = y - x
    low, high = bootstrap_interval(d, rng=rng, n_resamples=n_resamples, confidence=confidence)
    return PairedResult(n=int(d.size), mean_a=float(x.mean()), mean_b=float(y.mean()), delta=float(d.mean()),
                        low=low, high=high, p_value=sign_flip_p_value(d, rng=rng, n_resamples=n_resamples))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order (the k-th smallest of m is multiplied by
    m - k + 1, then made non-decreasing and capped at 1)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _seed(*parts: object) -> int:
    return zlib.crc32("\x1f".join(map(str, parts)).encode("utf-8"))


def intervals_table(per_query: pl.DataFrame, *, n_resamples: int = N_RESAMPLES) -> pl.DataFrame:
    """Per group of GROUP_KEY: n queries, mean score and its bootstrap interval (percent)."""
    rows = []
    for key, part in per_query.group_by(list(GROUP_KEY), maintain_order=True):
        scores = part["score"].to_numpy()
        low, high = bootstrap_interval(scores, rng=np.random.default_rng(_seed(*key)), n_resamples=n_resamples)
        rows.append({**dict(zip(GROUP_KEY, key)), "n": len(scores), "mean": float(scores.mean()),
                     "ci_low": low, "ci_high": high})
    schema = {**{k: pl.Utf8 for k in GROUP_KEY}, "n": pl.Int64, "mean": pl.Float64, "ci_low": pl.Float64,
              "ci_high": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


COMPARISON_SCHEMA = {
    "task": pl.Utf8, "dataset": pl.Utf8, "language": pl.Utf8, "split": pl.Utf8, "metric": pl.Utf8,
    "system_a": pl.Utf8, "system_b": pl.Utf8, "n": pl.Int64, "n_unpaired": pl.Int64, "value_a": pl.Float64,
    "value_b": pl.Float64, "delta": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
    "p_value": pl.Float64, "p_holm": pl.Float64, "holm_family_size": pl.Int64, "significant": pl.Boolean,
}


def comparisons_table(per_query: pl.DataFrame, pairs: Sequence[tuple[str, str]], *,
                      n_resamples: int = N_RESAMPLES, alpha: float = ALPHA) -> pl.DataFrame:
    """Paired tests of B against A (``pairs`` of system names) on every (task, dataset, language,
    split, metric) both were scored on, matched by ``query_id``.

    Holm's correction runs within one family = one pair of systems on one task and metric, across
    its languages (and datasets). ``n_unpaired`` counts queries only one of the two has; they are
    left out of the test (and the count says so).
    """
    where = ["task", "dataset", "language", "split", "metric"]
    rows = []
    for system_a, system_b in pairs:
        a = per_query.filter(pl.col("system") == system_a).select(*where, "query_id", pl.col("score").alias("a"))
        b = per_query.filter(pl.col("system") == system_b).select(*where, "query_id", pl.col("score").alias("b"))
        both = a.join(b, on=[*where, "query_id"], how="full", coalesce=True)
        for key, part in both.group_by(where, maintain_order=True):
            paired = part.drop_nulls(["a", "b"])
            if paired.height == 0:
                continue
            result = paired_test(paired["a"].to_numpy(), paired["b"].to_numpy(), n_resamples=n_resamples,
                                 rng=np.random.default_rng(_seed(system_a, system_b, *key)))
            rows.append({**dict(zip(where, key)), "system_a": system_a, "system_b": system_b, "n": result.n,
                         "n_unpaired": part.height - paired.height, "value_a": result.mean_a, "value_b": result.mean_b,
                         "delta": result.delta, "ci_low": result.low, "ci_high": result.high,
                         "p_value": result.p_value})
    families: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        families.setdefault((row["system_a"], row["system_b"], row["task"], row["metric"]), []).append(i)
    for members in families.values():
        adjusted = holm([rows[i]["p_value"] for i in members])
        for i, p in zip(members, adjusted):
            rows[i] |= {"p_holm": p, "holm_family_size": len(members), "significant": p < alpha}
    return pl.DataFrame(rows, schema=COMPARISON_SCHEMA)
