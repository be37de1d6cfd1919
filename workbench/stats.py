"""Uncertainty for measured scores: intervals that cover, paired tests whose marks agree with their
intervals, Holm's correction, and the two-level bootstrap of the tier question.

Input: per-query scores (EVAL_PER_QUERY: one row per system, task, dataset, language, split, metric
and ``query_id``; ``score`` in percent; ``cluster``: queries that share a relevant passage, e.g. the
questions on one XQuAD paragraph). Published numbers have no per-query data, so they never get an
interval or a test.

One system's mean (:func:`value_interval`):

- 0/100 outcomes (Tatoeba accuracy, Recall@k with one relevant passage): Clopper-Pearson, which
  covers at least its nominal level for every p, also near 0 (a percentile bootstrap of 0 hits out
  of 168 gives [0, 0]); with clusters, on the effective sample size n / design effect;
- other scores (nDCG, MRR): the percentile bootstrap, resampling clusters (whole paragraphs) when
  queries share them, else queries.

Two systems on the same queries (:class:`PairedTest`): one procedure gives both the interval and the
p-value, so a mark can never disagree with its interval:

- 0/100 outcomes on independent queries: Newcombe's hybrid score interval for paired proportions
  (Newcombe 1998, method 10); p = the smallest level at which that interval excludes 0;
- otherwise the (cluster) bootstrap of the mean difference; p = 2 min(P*(d <= 0), P*(d >= 0)),
  which is below a exactly when the percentile interval at level 1 - a excludes 0.

:func:`holm_family`: Holm's step-down over one family (one pair of systems on one task and metric,
across languages). Each comparison's interval is shown at the level its step was tested at
(1 - alpha / (m - rank)), so "significant" and "the shown interval excludes 0" are the same
statement; where nothing is significant, the minimum detectable difference (80% power at that
level) says how large a difference the data could have shown.

:func:`tier_difference`: the two-level bootstrap (languages resampled within each tier, then
queries or clusters within each language) of the difference between two tiers' mean scores;
:func:`tier_mean`: the same for one tier's mean (the compare view's mean B - A per tier).

Randomness is explicit: every call takes a seeded ``numpy.random.Generator``; the table helpers
derive one seed per group from the group's key, so a report rebuilt from the same inputs shows the
same intervals.

Example::

    rng = numpy.random.default_rng(0)
    value_interval([0.0, 100.0, 100.0, 50.0], rng=rng)      # Interval(low, high, method, ...)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
ALPHA = 0.05  # family-wise significance level (Holm)
POWER = 0.80  # for the minimum detectable difference
# Resample this many bootstrap rows at a time: 1,000 x 2,000 queries is 16 MB of indices.
_CHUNK = 1_000
GROUP_KEY = ("system", "task", "dataset", "language", "split", "metric")

CLOPPER_PEARSON = "Clopper-Pearson (0/100 outcomes)"
CLOPPER_PEARSON_CLUSTERS = "Clopper-Pearson on the effective sample size (0/100 outcomes in clusters)"
BOOTSTRAP = "percentile bootstrap over queries"
CLUSTER_BOOTSTRAP = "percentile bootstrap over clusters of queries"
NEWCOMBE = "Newcombe's paired score interval (0/100 outcomes)"


def _as_array(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("scores must be a non-empty 1-D sequence")
    return values


def is_binary(scores: np.ndarray) -> bool:
    """Every score is 0 or 100 (a per-query hit or miss)."""
    return bool(np.all((scores == 0.0) | (scores == 100.0)))


def _cluster_index(clusters: Sequence[str] | np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    """(cluster number of each query, number of clusters); no clusters: every query its own."""
    if clusters is None:
        return np.arange(n), n
    _, index = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    return index, int(index.max()) + 1


def bootstrap_means(scores: Sequence[float] | np.ndarray, *, rng: np.random.Generator,
                    n_resamples: int = N_RESAMPLES, clusters: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
    """Means of ``n_resamples`` resamples of ``scores``: of the queries, or of whole clusters of queries
    (each resample draws as many clusters as there are, with replacement, and averages their queries)."""
    values = _as_array(scores)
    index, k = _cluster_index(clusters, values.size)
    means = np.empty(n_resamples)
    if k == values.size:
        for start in range(0, n_resamples, _CHUNK):
            stop = min(start + _CHUNK, n_resamples)
            draw = rng.integers(0, values.size, size=(stop - start, values.size))
            means[start:stop] = values[draw].mean(axis=1)
        return means
    sums = np.bincount(index, weights=values, minlength=k)
    counts = np.bincount(index, minlength=k).astype(np.float64)
    for start in range(0, n_resamples, _CHUNK):
        stop = min(start + _CHUNK, n_resamples)
        draw = rng.integers(0, k, size=(stop - start, k))
        means[start:stop] = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    return means


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """The interval between the (1 - confidence)/2 points of ``draws`` from below and from above
    (inverted empirical CDF on both sides): it excludes 0 exactly when the two-sided bootstrap
    p-value of :func:`bootstrap_p_value` is below 1 - confidence."""
    tail = (1 - confidence) / 2
    low = float(np.quantile(draws, tail, method="inverted_cdf"))
    high = -float(np.quantile(-draws, tail, method="inverted_cdf"))
    return low, high


def bootstrap_p_value(draws: np.ndarray) -> float:
    """Two-sided: 2 min(share of draws <= 0, share >= 0), capped at 1 (never below 1 / draws)."""
    share = min(np.mean(draws <= 0), np.mean(draws >= 0))
    return float(min(1.0, max(2 * share, 1 / draws.size)))


def clopper_pearson(hits: float, n: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact binomial interval for ``hits`` of ``n`` (both may be fractional: an effective sample), in percent."""
    tail = (1 - confidence) / 2
    low = 0.0 if hits <= 0 else float(scipy_stats.beta.ppf(tail, hits, n - hits + 1))
    high = 1.0 if hits >= n else float(scipy_stats.beta.ppf(1 - tail, hits + 1, n - hits))
    return 100 * low, 100 * high


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str
    n: int  # queries
    n_clusters: int


def bootstrap_interval(scores: Sequence[float] | np.ndarray, *, rng: np.random.Generator,
                       n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                       clusters: Sequence[str] | np.ndarray | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (over clusters when given)."""
    means = bootstrap_means(scores, rng=rng, n_resamples=n_resamples, clusters=clusters)
    return percentile_interval(means, confidence)


def value_interval(scores: Sequence[float] | np.ndarray, *, rng: np.random.Generator,
                   clusters: Sequence[str] | np.ndarray | None = None, n_resamples: int = N_RESAMPLES,
                   confidence: float = CONFIDENCE) -> Interval:
    """The interval of one system's mean score (see the module docstring for the method chosen)."""
    values = _as_array(scores)
    index, k = _cluster_index(clusters, values.size)
    clustered = k < values.size
    if is_binary(values):
        hits = float(np.count_nonzero(values == 100.0))
        n = float(values.size)
        if not clustered:
            low, high = clopper_pearson(hits, n, confidence)
            return Interval(low, high, CLOPPER_PEARSON, values.size, k)
        deff = design_effect(values, index, k, rng=rng, n_resamples=n_resamples)
        low, high = clopper_pearson(hits / deff, n / deff, confidence)
        return Interval(low, high, CLOPPER_PEARSON_CLUSTERS, values.size, k)
    low, high = bootstrap_interval(values, rng=rng, n_resamples=n_resamples, confidence=confidence,
                                   clusters=clusters if clustered else None)
    return Interval(low, high, CLUSTER_BOOTSTRAP if clustered else BOOTSTRAP, values.size, k)


def design_effect(values: np.ndarray, index: np.ndarray, k: int, *, rng: np.random.Generator,
                  n_resamples: int = N_RESAMPLES) -> float:
    """Variance of the cluster-bootstrap mean over the variance of independent queries (at least 1); with no
    variation at all (every query a hit), the mean cluster size, its largest value (clusters fully alike)."""
    p = values.mean() / 100
    if p in (0.0, 1.0):
        return values.size / k
    var_iid = p * (1 - p) / values.size
    draws = bootstrap_means(values, rng=rng, n_resamples=min(n_resamples, 2_000), clusters=index) / 100
    return max(1.0, float(draws.var()) / var_iid)


# ---------------------------------------------------------------------------------------------
# paired comparisons
# ---------------------------------------------------------------------------------------------
def _wilson(p: float, n: int, z: float) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def newcombe_paired(both: int, only_b: int, only_a: int, neither: int, confidence: float) -> tuple[float, float]:
    """Newcombe (1998) method 10: interval of p_B - p_A for paired 0/1 outcomes, in percent."""
    n = both + only_b + only_a + neither
    z = float(scipy_stats.norm.ppf(1 - (1 - confidence) / 2))
    p1, p2 = (both + only_b) / n, (both + only_a) / n
    l1, u1 = _wilson(p1, n, z)
    l2, u2 = _wilson(p2, n, z)
    denominator = (both + only_b) * (only_a + neither) * (both + only_a) * (only_b + neither)
    phi = (both * neither - only_b * only_a) / math.sqrt(denominator) if denominator else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return 100 * (p1 - p2 - delta), 100 * (p1 - p2 + epsilon)


class PairedTest:
    """System B against system A on the same queries (``a[i]``, ``b[i]`` score query i): the mean
    difference B - A, its interval at any level, and the p-value of the same procedure."""

    def __init__(self, a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, rng: np.random.Generator,
                 clusters: Sequence[str] | np.ndarray | None = None, n_resamples: int = N_RESAMPLES):
        x, y = _as_array(a), _as_array(b)
        if x.size != y.size:
            raise ValueError(f"paired scores need the same queries: {x.size} against {y.size}")
        self.n = int(x.size)
        self.mean_a, self.mean_b = float(x.mean()), float(y.mean())
        self.delta = float((y - x).mean())
        index, self.n_clusters = _cluster_index(clusters, self.n)
        self.binary = is_binary(x) and is_binary(y) and self.n_clusters == self.n
        if self.binary:
            hit_a, hit_b = x == 100.0, y == 100.0
            self.table = (int(np.sum(hit_a & hit_b)), int(np.sum(hit_b & ~hit_a)), int(np.sum(hit_a & ~hit_b)),
                          int(np.sum(~hit_a & ~hit_b)))
            self.method = NEWCOMBE
            low, high = self.interval(CONFIDENCE)
            self.se = (high - low) / (2 * float(scipy_stats.norm.ppf(1 - (1 - CONFIDENCE) / 2)))
        else:
            self.draws = bootstrap_means(y - x, rng=rng, n_resamples=n_resamples,
                                         clusters=index if self.n_clusters < self.n else None)
            self.method = CLUSTER_BOOTSTRAP if self.n_clusters < self.n else BOOTSTRAP
            self.se = float(self.draws.std())

    def interval(self, confidence: float) -> tuple[float, float]:
        if self.binary:
            return newcombe_paired(*self.table, confidence)
        return percentile_interval(self.draws, confidence)

    def excludes_zero(self, confidence: float) -> bool:
        low, high = self.interval(confidence)
        return low > 0 or high < 0

    @property
    def p_value(self) -> float:
        """The smallest a at which the interval at level 1 - a excludes 0 (two-sided)."""
        if self.binary:
            if self.table[1] == self.table[2]:
                return 1.0
            lo, hi = 1e-8, 1.0
            if self.excludes_zero(1 - lo):
                return lo
            for _ in range(60):  # bisection: excluding 0 is monotone in the level
                mid = (lo + hi) / 2
                if self.excludes_zero(1 - mid):
                    hi = mid
                else:
                    lo = mid
            return hi
        if not np.any(self.draws):
            return 1.0
        return bootstrap_p_value(self.draws)

    def minimum_detectable(self, confidence: float, power: float = POWER) -> float:
        """The difference this test would find with ``power`` at level ``confidence`` (normal approximation)."""
        z = float(scipy_stats.norm.ppf(1 - (1 - confidence) / 2) + scipy_stats.norm.ppf(power))
        return z * self.se


@dataclass(frozen=True)
class FamilyResult:
    p_value: float
    p_holm: float
    confidence: float  # the level of the shown interval: the level Holm tested this comparison at
    low: float
    high: float
    significant: bool
    mdd: float  # minimum detectable difference at that level, 80% power


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


def holm_family(tests: Sequence[PairedTest], alpha: float = ALPHA) -> list[FamilyResult]:
    """Holm's step-down over one family, with each interval at the level its step was tested at.

    Sorted by p-value, the comparison of rank r (0-based) of m is tested at level alpha / (m - r) while
    every earlier one was significant; from the first that is not, the rest are shown at that same
    level. Significant therefore means exactly: the shown interval excludes 0.
    """
    m = len(tests)
    p_values = [t.p_value for t in tests]
    adjusted = holm(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    results: list[FamilyResult | None] = [None] * m
    stopped_at: float | None = None
    for rank, i in enumerate(order):
        confidence = 1 - alpha / (m - rank) if stopped_at is None else stopped_at
        low, high = tests[i].interval(confidence)
        significant = stopped_at is None and (low > 0 or high < 0)
        if not significant and stopped_at is None:
            stopped_at = confidence
        results[i] = FamilyResult(p_value=p_values[i], p_holm=adjusted[i], confidence=confidence, low=low, high=high,
                                  significant=significant, mdd=tests[i].minimum_detectable(confidence))
    return [r for r in results if r is not None]


# ---------------------------------------------------------------------------------------------
# the tier question
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TierDifference:
    difference: float  # mean score of tier A's languages minus tier B's, points
    low: float
    high: float
    n_a: int  # languages
    n_b: int
    languages_a: tuple[str, ...]
    languages_b: tuple[str, ...]


def _tier_draws(tier: dict[str, tuple[np.ndarray, np.ndarray | None]], rng: np.random.Generator,
                n_resamples: int) -> tuple[list[str], float, np.ndarray]:
    """(languages, mean over the languages' means, the two-level bootstrap draws of that mean)."""
    codes = sorted(tier)
    draws = np.stack([bootstrap_means(tier[c][0], rng=rng, n_resamples=n_resamples, clusters=tier[c][1])
                      for c in codes])  # languages x resamples
    means = np.array([float(np.mean(tier[c][0])) for c in codes])
    picks = rng.integers(0, len(codes), size=(n_resamples, len(codes)))
    outer = draws[picks, np.arange(n_resamples)[:, None]].mean(axis=1)
    return codes, float(means.mean()), outer


def tier_difference(tier_a: dict[str, tuple[np.ndarray, np.ndarray | None]],
                    tier_b: dict[str, tuple[np.ndarray, np.ndarray | None]], *, rng: np.random.Generator,
                    n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE) -> TierDifference:
    """Two-level bootstrap of (mean over tier A's languages) - (mean over tier B's): each resample draws
    the languages of each tier with replacement, then each drawn language's queries (or clusters)
    with replacement. ``tier_x``: language -> (per-query scores, clusters or None)."""
    codes_a, mean_a, draws_a = _tier_draws(tier_a, rng, n_resamples)
    codes_b, mean_b, draws_b = _tier_draws(tier_b, rng, n_resamples)
    low, high = percentile_interval(draws_a - draws_b, confidence)
    return TierDifference(mean_a - mean_b, low, high, len(codes_a), len(codes_b), tuple(codes_a), tuple(codes_b))


@dataclass(frozen=True)
class TierMean:
    mean: float  # mean over the tier's languages of each language's mean score, points
    low: float
    high: float
    n: int  # languages
    languages: tuple[str, ...]


def tier_mean(tier: dict[str, tuple[np.ndarray, np.ndarray | None]], *, rng: np.random.Generator,
              n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE) -> TierMean:
    """The same two-level bootstrap for one tier's mean (languages resampled, then queries or clusters
    within each drawn language); with per-query paired differences B - A as scores, the interval of a
    tier's mean difference between two systems. ``tier``: language -> (scores, clusters or None)."""
    codes, mean, draws = _tier_draws(tier, rng, n_resamples)
    low, high = percentile_interval(draws, confidence)
    return TierMean(mean, low, high, len(codes), tuple(codes))


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def _seed(*parts: object) -> int:
    return zlib.crc32("\x1f".join(map(str, parts)).encode("utf-8"))


def _clusters(part: pl.DataFrame) -> np.ndarray | None:
    return part["cluster"].to_numpy() if "cluster" in part.columns and part["cluster"].null_count() == 0 else None


def intervals_table(per_query: pl.DataFrame, *, n_resamples: int = N_RESAMPLES) -> pl.DataFrame:
    """Per group of GROUP_KEY: n queries, clusters, mean score and its 95% interval (percent), and the method."""
    rows = []
    for key, part in per_query.group_by(list(GROUP_KEY), maintain_order=True):
        scores = part["score"].to_numpy()
        got = value_interval(scores, rng=np.random.default_rng(_seed(*key)), clusters=_clusters(part),
                             n_resamples=n_resamples)
        rows.append({**dict(zip(GROUP_KEY, key)), "n": len(scores), "n_clusters": got.n_clusters,
                     "mean": float(scores.mean()), "ci_low": got.low, "ci_high": got.high, "method": got.method})
    schema = {**{k: pl.Utf8 for k in GROUP_KEY}, "n": pl.Int64, "n_clusters": pl.Int64, "mean": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64, "method": pl.Utf8}
    return pl.DataFrame(rows, schema=schema)


COMPARISON_SCHEMA = {
    "task": pl.Utf8, "dataset": pl.Utf8, "language": pl.Utf8, "split": pl.Utf8, "metric": pl.Utf8,
    "system_a": pl.Utf8, "system_b": pl.Utf8, "n": pl.Int64, "n_unpaired": pl.Int64, "n_clusters": pl.Int64,
    "value_a": pl.Float64, "value_b": pl.Float64, "delta": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
    "confidence": pl.Float64, "method": pl.Utf8, "p_value": pl.Float64, "p_holm": pl.Float64,
    "holm_family_size": pl.Int64, "significant": pl.Boolean, "mdd": pl.Float64,
}


def comparisons_table(per_query: pl.DataFrame, pairs: Sequence[tuple[str, str]], *,
                      n_resamples: int = N_RESAMPLES, alpha: float = ALPHA) -> pl.DataFrame:
    """Paired tests of B against A (``pairs`` of system names) on every (task, dataset, language,
    split, metric) both were scored on, matched by ``query_id``.

    Holm's family = one pair of systems on one task and metric, across its languages (and datasets);
    each interval is at the level Holm tested it at (:func:`holm_family`). ``n_unpaired`` counts
    queries only one of the two has; they are left out of the test (and the count says so).
    """
    where = ["task", "dataset", "language", "split", "metric"]
    rows, tests = [], []
    for system_a, system_b in pairs:
        a = per_query.filter(pl.col("system") == system_a).select(
            *where, "query_id", "cluster", pl.col("score").alias("a"))
        b = per_query.filter(pl.col("system") == system_b).select(*where, "query_id", pl.col("score").alias("b"))
        both = a.join(b, on=[*where, "query_id"], how="full", coalesce=True)
        for key, part in both.group_by(where, maintain_order=True):
            paired = part.drop_nulls(["a", "b"])
            if paired.height == 0:
                continue
            test = PairedTest(paired["a"].to_numpy(), paired["b"].to_numpy(), clusters=_clusters(paired),
                              rng=np.random.default_rng(_seed(system_a, system_b, *key)), n_resamples=n_resamples)
            tests.append(test)
            rows.append({**dict(zip(where, key)), "system_a": system_a, "system_b": system_b, "n": test.n,
                         "n_unpaired": part.height - paired.height, "n_clusters": test.n_clusters,
                         "value_a": test.mean_a, "value_b": test.mean_b, "delta": test.delta, "method": test.method})
    families: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        families.setdefault((row["system_a"], row["system_b"], row["task"], row["metric"]), []).append(i)
    for members in families.values():
        for i, got in zip(members, holm_family([tests[i] for i in members], alpha)):
            rows[i] |= {"ci_low": got.low, "ci_high": got.high, "confidence": got.confidence, "p_value": got.p_value,
                        "p_holm": got.p_holm, "holm_family_size": len(members), "significant": got.significant,
                        "mdd": got.mdd}
    return pl.DataFrame(rows, schema=COMPARISON_SCHEMA)
