"""The compare view's per-tier mean B - A carries the report's two-level bootstrap interval, or says
"cannot say" by the report's rule (fewer than 3 languages in the tier).

Inputs are real: two BM25 systems (bm25s + pytrec_eval) on the full XQuAD sets in ../shared/data/xquad
(240 paragraphs per language) with per-query scores: paragraphs indexed whole, or only their first 150
characters. German, English and Spanish are high-tier languages in the registry; Chinese is mid-tier.
"""

from __future__ import annotations

import re
from html import unescape

import numpy as np
import polars as pl
import pytest

from workbench import stats
from workbench.report.stage import run_compare
from workbench.report.tiers import MIN_LANGUAGES, too_few_languages

import report_inputs as ri

LANGUAGES = ["de", "en", "es", "zh"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("compare")
    parts = [ri.xquad_measured(shared_data, LANGUAGES, "bm25-first-150-chars", doc_chars=150),
             ri.xquad_measured(shared_data, LANGUAGES, "bm25")]
    pl.concat([r for r, _ in parts]).write_parquet(folder / "results.parquet")
    pl.concat([q for _, q in parts]).write_parquet(folder / "per_query.parquet")
    out = folder / "out"
    run_compare(f"{folder / 'results.parquet'}@bm25-first-150-chars", f"{folder / 'results.parquet'}@bm25", out)
    return folder, out


def test_per_tier_mean_has_the_two_level_bootstrap_interval_or_cannot_say(compared):
    folder, out = compared
    per_query = pl.read_parquet(folder / "per_query.parquet").filter(pl.col("metric") == "ndcg_at_10")
    a = per_query.filter(pl.col("system") == "bm25-first-150-chars").select("language", "query_id", "cluster",
                                                                           pl.col("score").alias("a"))
    b = per_query.filter(pl.col("system") == "bm25").select("language", "query_id", pl.col("score").alias("b"))
    paired = a.join(b, on=["language", "query_id"])
    high = {code: (part["b"].to_numpy() - part["a"].to_numpy(), part["cluster"].to_numpy())
            for (code,), part in paired.filter(pl.col("language") != "zh").group_by(["language"])}
    # the mean over the tier's languages of each language's mean paired difference
    expected = float(np.mean([d.mean() for d, _ in high.values()]))
    assert expected > 1.0  # the whole paragraph helps: a real difference to put an interval on

    summary = (out / "compare.md").read_text(encoding="utf-8")
    ndcg = summary[summary.index("## XQuADRetrieval: nDCG@10"):summary.index("## XQuADRetrieval: Recall@100")]
    line = next(x for x in ndcg.splitlines() if x.startswith("Mean B − A per tier"))
    got = re.search(r"high ([+-]\d+\.\d) \[([+-]\d+\.\d), ([+-]\d+\.\d)\] \(3 languages: de, en, es\)", line)
    assert got, line
    mean, low, high_end = map(float, got.groups())
    assert mean == pytest.approx(expected, abs=0.05) and low < mean < high_end
    # the same procedure run afresh with another seed lands on the same interval up to Monte Carlo noise
    again = stats.tier_mean(high, rng=np.random.default_rng(12345))
    assert again.low == pytest.approx(low, abs=0.35) and again.high == pytest.approx(high_end, abs=0.35)
    # one mid-tier language: the report's rule, with the count, and no interval
    why = too_few_languages({"mid": ["zh"]}, what="with per-query scores on both sides")
    assert f"the mid tier holds 1 language(s) with per-query scores on both sides (zh); the two-level bootstrap " \
           f"needs at least {MIN_LANGUAGES} per tier" == why
    assert f"mid cannot say ({why}; descriptive mean of 1 row(s) " in line

    html = unescape((out / "compare.html").read_text(encoding="utf-8"))
    section = html[html.index('id="section-XQuADRetrieval-ndcg_at_10"'):]
    section = section[:section.index("</details>")]
    spans = dict(re.findall(r'<span class="tier-mean" data-tier="(\w+)">(.*?)</span>', section, flags=re.S))
    assert spans["high"] == f"high {got.group(1)} [{got.group(2)}, {got.group(3)}] (3 languages: de, en, es)"
    assert spans["mid"].startswith(f"mid cannot say ({why}")
    assert "descriptive, no interval" not in html
