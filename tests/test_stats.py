"""Intervals, paired tests, Holm's correction and the tier bootstrap (workbench/stats.py), checked by
simulated coverage, hand computations, scipy.stats, and per-query scores of real BM25 runs on XQuAD
(pytrec_eval)."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest
import scipy.stats

from workbench import stats

import report_inputs as ri


def test_accuracy_intervals_cover_near_zero_in_simulation():
    # Tatoeba-like: 168 sentence pairs, true accuracy 1%. Over 2,000 simulated test sets the 95%
    # interval must contain the truth at least 93% of the time (Clopper-Pearson: at least 95% by
    # construction). The percentile bootstrap it replaces covers far less: 0 hits give [0, 0].
    rng = np.random.default_rng(20240601)
    p, n, sets = 0.01, 168, 2_000
    covered = bootstrap_covered = 0
    for _ in range(sets):
        scores = 100.0 * (rng.random(n) < p)
        got = stats.value_interval(scores, rng=rng)
        covered += got.low <= 100 * p <= got.high
        assert got.method == stats.CLOPPER_PEARSON
    for _ in range(300):  # the old method, for contrast (fewer sets: it resamples)
        scores = 100.0 * (rng.random(n) < p)
        low, high = stats.bootstrap_interval(scores, rng=rng, n_resamples=1_000)
        bootstrap_covered += low <= 100 * p <= high
    assert covered / sets >= 0.93, covered / sets
    assert bootstrap_covered / 300 < 0.90  # why the method changed


def test_clopper_pearson_by_hand():
    # 0 of 168: the upper bound solves (1 - p)^168 = 0.025 -> p = 1 - 0.025^(1/168)
    low, high = stats.clopper_pearson(0, 168)
    assert low == 0.0 and high == pytest.approx(100 * (1 - 0.025 ** (1 / 168)), rel=1e-9)
    # against scipy's exact binomial test interval
    ref = scipy.stats.binomtest(7, 168).proportion_ci(confidence_level=0.95, method="exact")
    low, high = stats.clopper_pearson(7, 168)
    assert (low, high) == (pytest.approx(100 * ref.low), pytest.approx(100 * ref.high))


def test_paired_binary_interval_covers_and_matches_its_p_value():
    # two systems on 168 pairs, 3% and 1% accuracy, correlated (a hit of A is usually a hit of B)
    rng = np.random.default_rng(7)
    n, truth, covered, sets = 168, -2.0, 0, 1_000
    for _ in range(sets):
        u = rng.random(n)
        a = 100.0 * (u < 0.03)
        b = 100.0 * (u < 0.01)
        test = stats.PairedTest(a, b, rng=rng)
        assert test.method == stats.NEWCOMBE
        low, high = test.interval(0.95)
        covered += low <= truth <= high
        # one procedure: the interval excludes 0 exactly when p < 0.05
        if abs(test.p_value - 0.05) > 1e-4:
            assert test.excludes_zero(0.95) == (test.p_value < 0.05)
    assert covered / sets >= 0.93, covered / sets


def test_cluster_bootstrap_is_wider_than_the_query_bootstrap_on_xquad(xquad):
    # XQuAD has about 5 questions per paragraph: resampling paragraphs keeps their dependence
    part = xquad.filter((pl.col("system") == "bm25") & (pl.col("language") == "hi") & (pl.col("metric") == "ndcg_at_10"))
    scores, clusters = part["score"].to_numpy(), part["cluster"].to_numpy()
    assert len(set(clusters)) == 240 and scores.size == 1183  # the XQuAD-hi questions in ../shared/data/xquad
    naive = stats.bootstrap_interval(scores, rng=np.random.default_rng(1))
    clustered = stats.value_interval(scores, clusters=clusters, rng=np.random.default_rng(1))
    assert clustered.method == stats.CLUSTER_BOOTSTRAP and clustered.n_clusters == 240
    ratio = (clustered.high - clustered.low) / (naive[1] - naive[0])
    assert 1.1 < ratio < 3.0, ratio


def test_cluster_bootstrap_covers_clustered_data_in_simulation():
    # 60 paragraphs x 5 questions, strongly correlated within a paragraph: the cluster bootstrap covers
    # near 95%, the query bootstrap (which treats 300 questions as independent) clearly less
    rng = np.random.default_rng(11)
    clusters = np.repeat(np.arange(60), 5).astype(str)
    hits = naive_hits = 0
    sets = 400
    for _ in range(sets):
        paragraph = rng.normal(50, 20, 60)
        scores = np.clip(np.repeat(paragraph, 5) + rng.normal(0, 5, 300), 0, 100)
        truth = 50.0
        got = stats.value_interval(scores, clusters=clusters, rng=rng, n_resamples=1_000)
        hits += got.low <= truth <= got.high
        low, high = stats.bootstrap_interval(scores, rng=rng, n_resamples=1_000)
        naive_hits += low <= truth <= high
    assert hits / sets >= 0.90, hits / sets
    assert naive_hits / sets < hits / sets - 0.15


def test_interval_matches_exhaustive_enumeration_of_every_resample():
    # Hand computation: all 4^4 = 256 equally likely resamples of 4 scores, their exact means,
    # and the 2.5% / 97.5% points of that exact distribution.
    scores = [10.0, 20.0, 30.0, 90.0]
    exact = np.sort([np.mean(c) for c in itertools.product(scores, repeat=4)])
    assert exact.size == 256
    want_low, want_high = np.percentile(exact, [2.5, 97.5])
    assert (want_low, want_high) == (15.0, 72.5)
    low, high = stats.bootstrap_interval(scores, rng=np.random.default_rng(1), n_resamples=100_000)
    assert low == pytest.approx(want_low, abs=1.0) and high == pytest.approx(want_high, abs=1.0)


@pytest.fixture(scope="module")
def xquad(shared_data):
    """Real per-query nDCG@10 / Recall@100 of two BM25 systems on XQuAD de and hi (pytrec_eval)."""
    _, full = ri.xquad_measured(shared_data, ["de", "hi"], "bm25")
    _, short = ri.xquad_measured(shared_data, ["de", "hi"], "bm25-first-150-chars", doc_chars=150)
    return pl.concat([full, short])


def test_bootstrap_matches_scipy_on_real_per_query_scores(xquad):
    scores = xquad.filter((pl.col("system") == "bm25") & (pl.col("language") == "de")
                          & (pl.col("metric") == "ndcg_at_10"))["score"].to_numpy()
    assert scores.size == 1181  # the XQuAD-de questions in ../shared/data/xquad
    low, high = stats.bootstrap_interval(scores, rng=np.random.default_rng(3))
    ref = scipy.stats.bootstrap((scores,), np.mean, method="percentile", n_resamples=10_000,
                                rng=np.random.default_rng(4)).confidence_interval
    assert low < scores.mean() < high
    assert low == pytest.approx(ref.low, abs=0.3) and high == pytest.approx(ref.high, abs=0.3)


def test_marks_and_intervals_never_disagree():
    # 300 random families of 1-6 comparisons (binary and continuous, small and large effects): a
    # comparison is significant exactly when its shown interval excludes 0, and the shown interval
    # is at the level Holm tested it at
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(300):
        family = []
        for _ in range(int(rng.integers(1, 7))):
            n = int(rng.integers(20, 200))
            shift = float(rng.choice([0.0, 2.0, 8.0]))
            if rng.random() < 0.5:
                a = 100.0 * (rng.random(n) < 0.3)
                b = 100.0 * (rng.random(n) < 0.3 + shift / 100)
            else:
                a = rng.uniform(0, 100, n)
                b = np.clip(a + rng.normal(shift, 15, n), 0, 100)
            family.append(stats.PairedTest(a, b, rng=rng, n_resamples=2_000))
        for result in stats.holm_family(family):
            assert result.significant == (result.low > 0 or result.high < 0)
            assert result.significant == (result.p_holm < stats.ALPHA) or abs(result.p_holm - stats.ALPHA) < 1e-3
            assert 0.95 <= result.confidence < 1
            checked += 1
    assert checked > 600


def test_paired_p_value_matches_scipy_permutation_test(xquad):
    def scores(system):
        return xquad.filter((pl.col("system") == system) & (pl.col("language") == "hi")
                            & (pl.col("metric") == "ndcg_at_10")).sort("query_id")["score"].to_numpy()

    a, b = scores("bm25-first-150-chars"), scores("bm25")
    a, b = a[:60], b[:60]  # a small, noisy difference: the p-value is neither ~0 nor ~1
    ours = stats.PairedTest(a, b, rng=np.random.default_rng(5), n_resamples=20_000)
    ref = scipy.stats.permutation_test((a, b), lambda x, y: np.mean(y - x), permutation_type="samples",
                                       n_resamples=20_000, rng=np.random.default_rng(6))
    assert ours.delta == pytest.approx(b.mean() - a.mean())
    # the bootstrap p-value and the permutation p-value estimate the same thing by different routes
    assert ours.p_value == pytest.approx(ref.pvalue, abs=0.03)


def test_identical_systems_are_not_different():
    scores = [0.0, 50.0, 100.0, 33.3]
    test = stats.PairedTest(scores, scores, rng=np.random.default_rng(0))
    assert test.delta == 0 and test.p_value == 1.0 and test.interval(0.95) == (0.0, 0.0)
    (got,) = stats.holm_family([test])
    assert not got.significant and got.mdd == 0.0


def test_minimum_detectable_difference_is_found_with_about_80_percent_power():
    # a true difference of exactly the reported MDD is detected in about 80% of simulated sets
    rng = np.random.default_rng(5)
    n = 120
    base = stats.PairedTest(rng.uniform(0, 100, n), rng.uniform(0, 100, n), rng=rng, n_resamples=2_000)
    mdd = base.minimum_detectable(0.95)
    found = 0
    for _ in range(200):
        a = rng.uniform(0, 100, n)
        b = rng.uniform(0, 100, n) + mdd
        found += stats.PairedTest(a, b, rng=rng, n_resamples=1_000).excludes_zero(0.95)
    assert 0.65 < found / 200 < 0.93, found / 200


def test_holm_by_hand():
    # sorted: .005*4 = .02, .01*3 = .03, .03*2 = .06, .04*1 = .04 -> monotone: .02 .03 .06 .06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_tier_difference_two_level_bootstrap():
    rng = np.random.default_rng(9)

    def tier(means, n=150):
        return {f"l{i}{m}": (np.clip(rng.normal(m, 25, n), 0, 100), None) for i, m in enumerate(means)}

    # high-tier languages clearly ahead: the interval lies above zero
    high, low = tier([70, 75, 80, 72]), tier([40, 45, 50])
    got = stats.tier_difference(high, low, rng=rng, n_resamples=2_000)
    assert got.n_a == 4 and got.n_b == 3 and got.low > 0 and got.low < got.difference < got.high
    # the same spread of languages in both tiers: the interval includes zero, and it is wider than a
    # one-level bootstrap of the pooled queries would make it (the languages themselves vary)
    high, low = tier([40, 60, 80]), tier([45, 55, 75])
    got = stats.tier_difference(high, low, rng=rng, n_resamples=2_000)
    assert got.low < 0 < got.high and got.high - got.low > 15


def test_tables_give_intervals_and_holm_corrected_comparisons_per_language(xquad):
    intervals = stats.intervals_table(xquad, n_resamples=2_000)
    assert intervals.height == 2 * 2 * 2  # systems x languages x metrics
    row = intervals.filter((pl.col("system") == "bm25") & (pl.col("language") == "de")
                           & (pl.col("metric") == "ndcg_at_10")).row(0, named=True)
    assert row["n"] == 1181 and row["n_clusters"] == 240 and row["ci_low"] < row["mean"] < row["ci_high"]
    recall = intervals.filter((pl.col("metric") == "recall_at_100"))["method"].unique().to_list()
    assert recall == [stats.CLOPPER_PEARSON_CLUSTERS]  # one relevant paragraph per question: 0/100 outcomes
    again = stats.intervals_table(xquad, n_resamples=2_000)
    assert again.equals(intervals)  # seeded per group: a rebuilt report shows the same intervals

    table = stats.comparisons_table(xquad, [("bm25-first-150-chars", "bm25")], n_resamples=2_000)
    assert table.height == 4  # 2 languages x 2 metrics
    assert set(table["holm_family_size"]) == {2}  # the family: one task and metric, across languages
    for rec in table.iter_rows(named=True):
        assert rec["p_holm"] >= rec["p_value"] and rec["n_unpaired"] == 0
        assert rec["delta"] == pytest.approx(rec["value_b"] - rec["value_a"])
        assert rec["significant"] == (rec["ci_low"] > 0 or rec["ci_high"] < 0)
    # indexing only the first 150 characters of a paragraph loses answers: a clear, significant loss
    de = table.filter((pl.col("language") == "de") & (pl.col("metric") == "ndcg_at_10")).row(0, named=True)
    assert de["delta"] > 5 and de["ci_low"] > 0 and de["significant"] and de["confidence"] >= 0.975
