"""Bootstrap intervals, paired tests and Holm's correction (workbench/stats.py), checked against
hand computations, scipy.stats, and per-query scores of real BM25 runs on XQuAD (pytrec_eval)."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest
import scipy.stats

import report_inputs as ri
from workbench import stats


def test_interval_matches_exhaustive_enumeration_of_every_resample():
    # Hand computation: all 4^4 = 256 equally likely resamples of 4 scores, their exact means,
    # and the 2.5% / 97.5% points of that exact distribution.
    scores = [10.0, 20.0, 30.0, 90.0]
    exact = np.sort([np.mean(c) for c in itertools.product(scores, repeat=4)])
    assert exact.size == 256
    want_low, want_high = np.percentile(exact, [2.5, 97.5])
    # by hand: P(mean <= 12.5) = 5/256 < 2.5% < P(mean <= 15) = 15/256, and
    # P(mean <= 70) = 247/256 < 97.5% < P(mean <= 72.5) = 251/256 (four resamples each at 70, 72.5, 75)
    assert (want_low, want_high) == (15.0, 72.5)
    low, high = stats.bootstrap_interval(scores, rng=np.random.default_rng(1), n_resamples=100_000)
    assert low == pytest.approx(want_low, abs=1.0) and high == pytest.approx(want_high, abs=1.0)


def test_interval_matches_the_normal_approximation_for_many_binary_scores():
    # 1,000 sentence pairs, 300 found (score 100) and 700 missed (0): 30 +- 1.96 * sqrt(.3 * .7 / 1000) * 100
    scores = np.array([100.0] * 300 + [0.0] * 700)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 1000) * 100
    low, high = stats.bootstrap_interval(scores, rng=np.random.default_rng(2))
    assert half == pytest.approx(2.84, abs=0.01)
    assert low == pytest.approx(30 - half, abs=0.3) and high == pytest.approx(30 + half, abs=0.3)


@pytest.fixture(scope="module")
def xquad(shared_data):
    """Real per-query nDCG@10 / Recall@100 of two BM25 systems on XQuAD de and hi (pytrec_eval)."""
    _, full = ri.xquad_measured(shared_data, ["de", "hi"], "bm25")
    _, short = ri.xquad_measured(shared_data, ["de", "hi"], "bm25-first-150-chars", doc_chars=150)
    return pl.concat([full, short])


def test_interval_matches_scipy_bootstrap_on_real_per_query_scores(xquad):
    scores = xquad.filter((pl.col("system") == "bm25") & (pl.col("language") == "de")
                          & (pl.col("metric") == "ndcg_at_10"))["score"].to_numpy()
    assert scores.size == 1181  # the XQuAD-de questions in ../shared/data/xquad
    low, high = stats.bootstrap_interval(scores, rng=np.random.default_rng(3))
    ref = scipy.stats.bootstrap((scores,), np.mean, method="percentile", n_resamples=10_000,
                                rng=np.random.default_rng(4)).confidence_interval
    assert low < scores.mean() < high
    # two independent Monte Carlo runs of the same definition agree to a few tenths of a point
    assert low == pytest.approx(ref.low, abs=0.3) and high == pytest.approx(ref.high, abs=0.3)


def test_paired_p_value_matches_scipy_permutation_test(xquad):
    def scores(system):
        return xquad.filter((pl.col("system") == system) & (pl.col("language") == "hi")
                            & (pl.col("metric") == "ndcg_at_10")).sort("query_id")["score"].to_numpy()

    a, b = scores("bm25-first-150-chars"), scores("bm25")
    # a small, noisy difference: 60 queries, so the p-value is neither ~0 nor ~1
    a, b = a[:60], b[:60]
    ours = stats.paired_test(a, b, rng=np.random.default_rng(5), n_resamples=20_000)
    ref = scipy.stats.permutation_test((a, b), lambda x, y: np.mean(y - x), permutation_type="samples",
                                       n_resamples=20_000, rng=np.random.default_rng(6))
    assert ours.delta == pytest.approx(b.mean() - a.mean())
    assert ours.p_value == pytest.approx(ref.pvalue, abs=0.02)
    assert ours.low <= ours.delta <= ours.high


def test_identical_systems_are_not_different():
    scores = [0.0, 50.0, 100.0, 33.3]
    result = stats.paired_test(scores, scores, rng=np.random.default_rng(0))
    assert result.delta == 0 and result.p_value == 1.0 and result.low == result.high == 0


def test_holm_by_hand():
    # sorted: .005*4 = .02, .01*3 = .03, .03*2 = .06, .04*1 = .04 -> monotone: .02 .03 .06 .06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_tables_give_intervals_and_holm_corrected_comparisons_per_language(xquad):
    intervals = stats.intervals_table(xquad, n_resamples=2_000)
    assert intervals.height == 2 * 2 * 2  # systems x languages x metrics
    row = intervals.filter((pl.col("system") == "bm25") & (pl.col("language") == "de")
                           & (pl.col("metric") == "ndcg_at_10")).row(0, named=True)
    assert row["n"] == 1181 and row["ci_low"] < row["mean"] < row["ci_high"]
    again = stats.intervals_table(xquad, n_resamples=2_000)
    assert again.equals(intervals)  # seeded per group: a rebuilt report shows the same intervals

    table = stats.comparisons_table(xquad, [("bm25-first-150-chars", "bm25")], n_resamples=2_000)
    assert table.height == 4  # 2 languages x 2 metrics
    assert set(table["holm_family_size"]) == {2}  # the family: one task and metric, across languages
    for rec in table.iter_rows(named=True):
        assert rec["p_holm"] >= rec["p_value"] and rec["n_unpaired"] == 0
        assert rec["delta"] == pytest.approx(rec["value_b"] - rec["value_a"])
    # indexing only the first 150 characters of a paragraph loses answers: a clear, significant loss
    de = table.filter((pl.col("language") == "de") & (pl.col("metric") == "ndcg_at_10")).row(0, named=True)
    assert de["delta"] > 5 and de["ci_low"] > 0 and de["significant"]
