"""The report leads with what the run measured (intervals, paired tests, Holm), keeps gaps like for
like, draws each chart from its table's rows, and carries the training card, the Tatoeba section and
the test-double leakage guard. Inputs are real: BM25 (bm25s + pytrec_eval) on XQuAD, MTEB-published
MiniLM rows copied into EVAL_RESULTS (labelled so), and a real pipeline run (test double -> filter ->
MiniLM fine-tune) whose model is scored on Tatoeba by nearest-neighbour search."""

from __future__ import annotations

import json

import polars as pl
import pytest

from workbench import conditions
from workbench.config import ReportSection
from workbench.encoder import minilm_path
from workbench.languages import load_registry
from workbench.report.references import load_references, reference_dir
from workbench.report.stage import analyse, build_report, load_results, miracl_chart_values

import report_inputs as ri
from conftest import REPO

SHIPPED = REPO / "reports" / "reference"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def xquad_run(shared_data, tmp_path_factory):
    """An eval folder with results.parquet and per_query.parquet: two real BM25 systems on XQuAD de, hi."""
    folder = tmp_path_factory.mktemp("xquad") / "eval"
    folder.mkdir()
    short_results, short_pq = ri.xquad_measured(shared_data, ["de", "hi"], "bm25-first-150-chars", doc_chars=150)
    full_results, full_pq = ri.xquad_measured(shared_data, ["de", "hi"], "bm25")
    pl.concat([short_results, full_results]).write_parquet(folder / "results.parquet")
    pl.concat([short_pq, full_pq]).write_parquet(folder / "per_query.parquet")
    return folder / "results.parquet"


def test_report_leads_with_measurements_intervals_and_holm(xquad_run, tmp_path):
    out = tmp_path / "report"
    build_report(out, [xquad_run], config=ReportSection(focus="bm25", reference_dir=str(SHIPPED)))
    measured = pl.read_parquet(out / "measured.parquet")
    assert measured.height == 8  # 2 systems x 2 languages x 2 metrics, XQuAD rows included
    assert measured["ci_low"].null_count() == 0
    assert ((measured["ci_low"] <= measured["value"]) & (measured["value"] <= measured["ci_high"])).all()
    comparisons = pl.read_parquet(out / "comparisons.parquet")
    assert comparisons.height == 4 and set(comparisons["holm_family_size"]) == {2}
    assert set(zip(comparisons["system_a"], comparisons["system_b"])) == {("bm25-first-150-chars", "bm25")}
    assert (comparisons["p_holm"] >= comparisons["p_value"]).all()
    html = (out / "index.html").read_text(encoding="utf-8")
    # first screen: the run's own numbers, before any published context
    assert html.index('id="measured"') < html.index('id="context"') < html.index('id="languages"')
    assert 'id="table-measured-XQuADRetrieval-full-ndcg_at_10"' in html
    for dataset in ("xquad-de", "xquad-hi"):
        assert dataset in html[: html.index('id="context"')]
    # signs carried by symbol and words: every significant XQuAD difference is marked, never colour alone
    de = comparisons.filter((pl.col("language") == "de") & (pl.col("metric") == "ndcg_at_10")).row(0, named=True)
    assert de["significant"] and de["delta"] > 0
    assert f"\u25b2 {de['delta']:+.1f} [{de['ci_low']:+.1f}, {de['ci_high']:+.1f}]" in html
    assert "higher on 2 (de, hi)" in html  # the significance line names n and the languages
    assert "Holm family = these 2" in html and "system against system" in html
    # intervals that respect the data: XQuAD's questions share paragraphs, so paragraphs are resampled, and
    # Recall@100 (one relevant paragraph per question) is a 0/100 outcome with an exact interval
    methods = dict(zip(measured["metric"], measured["method"]))
    assert methods["ndcg_at_10"] == "percentile bootstrap over clusters of queries"
    assert methods["recall_at_100"].startswith("Clopper-Pearson") and set(measured["n_clusters"]) == {240}
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert summary.index("What this run measured") < summary.index("Does the model leave")


def test_miracl_chart_shows_miracl_numbers_only(xquad_run, shared_data, tmp_path):
    registry = load_registry()
    hn = ri.mteb_results(shared_data, tmp_path / "hn.parquet", MINILM, "minilm (MTEB copy)",
                         task="MIRACLRetrievalHardNegatives", languages=["de", "yo", "sw"])
    results = load_results([xquad_run, hn], registry)
    refs = load_references(reference_dir(str(SHIPPED)))
    a = analyse(results, None, refs, registry, ReportSection(focus="minilm (MTEB copy)"))
    panels = miracl_chart_values(a)
    # one panel per corpus variant: hard-negative numbers never share an axis with full-corpus ones
    assert set(panels) == {conditions.HARD_NEGATIVES_V1, conditions.FULL}
    # bm25 was measured on XQuAD de/hi only: the MIRACL chart has no bar for it (the old chart drew XQuAD there)
    assert all("bm25" not in series for series in panels.values())
    copy = panels[conditions.HARD_NEGATIVES_V1]["minilm (MTEB copy)"]
    assert set(copy) == {"de", "yo", "sw"}
    want = pl.read_parquet(hn).filter((pl.col("metric") == "ndcg_at_10") & (pl.col("language") == "de"))["value"][0]
    assert copy["de"] == want
    assert "e5-mistral-7b-instruct (published)" in panels[conditions.FULL]
    assert "e5-mistral-7b-instruct (published)" not in panels[conditions.HARD_NEGATIVES_V1]


def test_gaps_compare_like_with_like_and_pick_the_matching_reference(shared_data, tmp_path):
    hn = ri.mteb_results(shared_data, tmp_path / "hn.parquet", MINILM, "minilm (MTEB copy)",
                         task="MIRACLRetrievalHardNegatives")
    out = tmp_path / "report"
    build_report(out, [hn], config=ReportSection(reference_dir=str(SHIPPED)))
    meta = json.loads((out / "report.json").read_text())
    gaps = pl.read_parquet(out / "gaps.parquet")
    comparable = gaps.filter(pl.col("comparable"))
    assert comparable.height and set(comparable["corpus"]) == {conditions.HARD_NEGATIVES_V1}
    # full-corpus numbers are never joined to hard-negative ones
    full = gaps.filter(pl.col("reference") == "e5-mistral-7b-instruct (published)")
    assert full.height == 2 * 18 - 2 and not full["comparable"].any()  # no Recall@100 published for de, yo
    assert full["differs"].str.contains("corpus: hard negatives v1 \\(reduced corpus\\) vs full corpus").all()
    # mteb ran e5-mistral on hard negatives v1 with its default prompt, not MIRACL's instruction: labelled so,
    # and never the primary reference
    hn_e5 = gaps.filter(pl.col("reference") == "e5-mistral-7b-instruct (MTEB hard negatives v1, mteb default prompt)")
    assert hn_e5.height == 2 * 18 and not hn_e5["comparable"].any()
    assert meta["primary_reference"] != "e5-mistral-7b-instruct (MTEB hard negatives v1, mteb default prompt)"
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "no gap: corpus: hard negatives v1 (reduced corpus) vs full corpus" in html
    assert "trained on this benchmark&#39;s training split" in html and "SWIM-X (published, synthetic only)" in html
    assert "unknown commit" not in html and "f4cc6c8b365a" in html  # sources name the MTEB commit


def test_hard_negative_numbers_are_below_full_corpus_for_e5_mistral():
    # the claim in references.py: on the shipped MTEB hard-negatives files e5-mistral scores below its
    # published full-corpus numbers (mean 5.2 points over the 17 languages other than the disputed yo;
    # en 2.3 ... ja 9.0)
    refs = load_references(SHIPPED).per_language.filter((pl.col("metric") == "ndcg_at_10") & pl.col("shown"))
    paper = refs.filter(pl.col("reference") == "e5-mistral-7b-instruct (published)").select(
        "language", "disputed", pl.col("value").alias("full"))
    hard = refs.filter(pl.col("reference") == "e5-mistral-7b-instruct (MTEB hard negatives v1, mteb default prompt)"
                       ).select("language", pl.col("value").alias("hn"))
    both = paper.join(hard, on="language").filter(pl.col("language") != "yo")
    assert both.height == 17
    diff = both.with_columns((pl.col("full") - pl.col("hn")).alias("d"))
    assert diff["d"].mean() == pytest.approx(5.2, abs=0.05)
    by_lang = dict(zip(diff["language"], diff["d"]))
    assert by_lang["en"] == pytest.approx(2.3, abs=0.05) and by_lang["ja"] == pytest.approx(9.0, abs=0.05)


def test_disputed_references_show_both_sources_and_no_gap(shared_data, tmp_path):
    # the BGE-M3 paper's current Table 2 gives e5-mistral 58.8 on yo, its earlier Table 1 79.7: disputed
    full = ri.mteb_results(shared_data, tmp_path / "full.parquet", MINILM, "minilm (MTEB copy)")
    out = tmp_path / "report"
    build_report(out, [full], config=ReportSection(reference_dir=str(SHIPPED)))
    scores = pl.read_parquet(out / "scores.parquet").filter(
        (pl.col("system") == "e5-mistral-7b-instruct (published)") & (pl.col("language") == "yo")
        & (pl.col("metric") == "ndcg_at_10"))
    assert sorted(scores["value"]) == [58.8, 79.7] and scores["disputed"].all()
    assert sorted(scores["version"]) == ["arXiv 2402.03216, current revision, Table 2",
                                         "arXiv 2402.03216, earlier version, Table 1"]
    gap = pl.read_parquet(out / "gaps.parquet").filter(
        (pl.col("reference") == "e5-mistral-7b-instruct (published)") & (pl.col("language") == "yo")
        & (pl.col("metric") == "ndcg_at_10")).row(0, named=True)
    assert gap["gap"] is None and gap["differs"].startswith("disputed")
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "disputed: also 79.7 (e5-mistral-7b-instruct (published), arXiv 2402.03216, earlier version, Table 1)" in html


def test_shipped_tatoeba_references_match_the_mteb_files():
    csv = pl.read_csv(SHIPPED / "mteb_tatoeba.csv")
    assert sorted(set(csv["model"])) == ["intfloat/e5-mistral-7b-instruct", "intfloat/multilingual-e5-base",
                                         "intfloat/multilingual-e5-large", "intfloat/multilingual-e5-small"]
    for rec in csv.filter(pl.col("language").is_in(["am", "sw"])).iter_rows(named=True):
        path = SHIPPED / "mteb_tatoeba" / rec["model"].replace("/", "__") / rec["revision"] / "Tatoeba.json"
        scores = {s["hf_subset"]: s for s in json.loads(path.read_text())["scores"]["test"]}
        assert scores[rec["hf_subset"]]["f1"] == pytest.approx(rec["f1"])
    tatoeba = load_references(SHIPPED).tatoeba
    assert tatoeba.filter(pl.col("language") == "am").height == 4 * 2  # 4 models x (f1, accuracy)
    assert tatoeba["provenance"].str.contains("f4cc6c8b365a").all()
    assert tatoeba["provenance"].str.contains("parallel").all()  # the training-data caveat travels with the number


@pytest.fixture(scope="module")
def trained_on_double(shared_data, tmp_path_factory):
    """A real run: the OpenAI test double generates sw/en data, the filter keeps some, MiniLM is fine-tuned;
    then the base and the fine-tuned model are scored on Tatoeba sw-eng (real encodes) with per-pair scores."""
    from workbench.config import parse_config
    from workbench.pipeline import run_pipeline
    from workbench.run import Run
    from workbench.testing.openai_double import OpenAIDouble

    root = tmp_path_factory.mktemp("double-run")
    with OpenAIDouble(shared_data) as double:
        config = parse_config({
            "run": {"name": "leak", "languages": ["sw", "en"], "quota": 12, "seed": 5},
            "generate": {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0, "model": "double",
                         "base_url": double.base_url},
            "train": {"model": "minilm", "deepspeed": "none", "lora": False, "batch_size": 4, "steps": 3,
                      "warmup_steps": 1, "max_length": 64},
            "pipeline": {"stages": ["plan", "generate", "filter", "audit", "train"]},
        }, where="test")
        run = Run.create(root / "run")
        run_pipeline(run, config, load_registry())
    model = run.stage_dir("train") / "model"
    contract = json.loads((model / "workbench_encoder.json").read_text())
    eval_dir = root / "eval"
    eval_dir.mkdir()
    assert contract["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"  # named for readers, not by its path
    # the base as it ships, the base under the fine-tuned contract (instruction, max_length 64), the fine-tuned model
    base_r, base_pq = ri.tatoeba_measured(shared_data, {"sw": "swh", "am": "amh"}, "minilm", str(minilm_path()))
    same_r, same_pq = ri.tatoeba_measured(shared_data, {"sw": "swh", "am": "amh"}, "minilm@ft-contract",
                                          str(minilm_path()), contract_from=str(model))
    ft_r, ft_pq = ri.tatoeba_measured(shared_data, {"sw": "swh", "am": "amh"}, "minilm-ft", str(model))
    pl.concat([base_r, same_r, ft_r]).write_parquet(eval_dir / "results.parquet")
    pl.concat([base_pq, same_pq, ft_pq]).write_parquet(eval_dir / "per_query.parquet")
    return run, eval_dir / "results.parquet"


def test_tatoeba_section_training_card_and_leakage_warning(trained_on_double, tmp_path):
    run, results = trained_on_double
    out = tmp_path / "report"
    build_report(out, [results], audit=run.root / "audit" / "summary.parquet",
               config=ReportSection(focus="minilm-ft", reference_dir=str(SHIPPED)))
    html = (out / "index.html").read_text(encoding="utf-8")
    first_screen = html[: html.index('id="measured"')]
    # the loud warning sits above everything else and names the system and the reason
    assert "LEAKAGE: minilm-ft was trained on data generated by the OpenAI TEST DOUBLE" in first_screen
    # training card: generator, records per language, steps, and the tiny-data warning
    records = pl.read_parquet(run.root / "train" / "records.parquet")
    assert 'id="card-minilm-ft"' in html and "double" in html
    for lang, n in records.group_by("language").len().iter_rows():
        assert f"{lang}: {n}" in html
    assert f"tiny training set: {records.height:,} training records" in html
    # Tatoeba per language, next to its audit row, with the change and its interval (or that nothing moved)
    audit = pl.read_parquet(run.root / "audit" / "summary.parquet")
    sw = audit.filter(pl.col("language") == "sw").row(0, named=True)
    tatoeba = html[html.index('id="tatoeba"'):html.index('id="context"')]
    assert f"{sw['accepted']:,} accepted examples" in tatoeba
    comparisons = pl.read_parquet(out / "comparisons.parquet").filter(pl.col("task") == "Tatoeba")
    assert set(comparisons["language"]) == {"sw", "am"} and set(comparisons["holm_family_size"]) == {2}
    # one cause per difference: the data (trained minus the base under its contract), the format (the base
    # under that contract minus the base as it is); the base against the trained model changes both
    causes = {(r["system_a"], r["system_b"]): r["cause"] for r in comparisons.iter_rows(named=True)}
    assert causes[("minilm@ft-contract", "minilm-ft")] == "training data"
    assert causes[("minilm", "minilm@ft-contract")] == "input format"
    assert causes[("minilm", "minilm-ft")] == "several"
    fmt = comparisons.filter(pl.col("cause") == "input format")["differs"][0]
    assert "instruction: no instruction vs instruction 'Retrieve parallel sentences.'" in fmt and "max length: 256 vs 64" in fmt
    change = comparisons.filter((pl.col("language") == "sw") & (pl.col("cause") == "training data")).row(0, named=True)
    words = f"{change['delta']:+.1f} [{change['ci_low']:+.1f}, {change['ci_high']:+.1f}]"
    assert words in tatoeba and "from the training data (trained minus minilm@ft-contract" in tatoeba
    assert ("only a change of about" in tatoeba) or ("significant, Holm-corrected" in tatoeba)
    assert "nothing moved measurably" not in html
    # the measured table shows the two single-cause differences, never base against trained
    table = html[html.index('id="table-measured-Tatoeba-subset-accuracy"'):]
    table = table[: table.index("</table>")]
    assert "minilm-ft \u2212 minilm@ft-contract" in table and "minilm@ft-contract \u2212 minilm<" in table
    assert "minilm-ft \u2212 minilm<" not in table
    assert "multilingual-e5-large (MTEB)" in tatoeba  # published context beside it
    assert (out / "compare" / "compare.html").is_file() and 'href="compare/compare.html"' in html


def test_overlap_with_tatoeba_is_found_in_the_training_data(trained_on_double, shared_data):
    from workbench.report.measured import tatoeba_overlap

    run, _ = trained_on_double
    # the double answers with Tatoeba sentences: the accepted data holds them verbatim, whatever the model was called
    assert tatoeba_overlap(run.root, [shared_data / "tatoeba"]) > 0
    assert tatoeba_overlap(run.root, [shared_data / "xquad"]) == 0  # no Tatoeba files there: nothing to match


@pytest.mark.slow
def test_tier_question_gets_a_two_level_bootstrap_interval(shared_data, tmp_path):
    """Real per-pair Tatoeba scores of MiniLM on 4 high-tier and 4 low-tier languages: the headline gives
    the high-minus-low difference with its interval and the languages per tier, and answers "Yes" only
    if the interval lies above zero; MIRACL-like single-language tiers would say "cannot say"."""
    high = {"es": "spa", "fr": "fra", "it": "ita", "de": "deu"}
    low = {"br": "bre", "fy": "fry", "ga": "gle", "gd": "gla"}
    from workbench.encoder import minilm_path

    results, per_query = ri.tatoeba_measured(shared_data, {**high, **low}, "minilm", str(minilm_path()), n=150)
    folder = tmp_path / "eval"
    folder.mkdir()
    results.write_parquet(folder / "results.parquet")
    per_query.write_parquet(folder / "per_query.parquet")
    out = tmp_path / "report"
    result = build_report(out, [folder / "results.parquet"], config=ReportSection(reference_dir=str(SHIPPED)))
    tiers = pl.read_parquet(out / "tiers.parquet").row(0, named=True)
    assert (tiers["benchmark"], tiers["metric"], tiers["n_high"], tiers["n_low"]) == ("tatoeba", "accuracy", 4, 4)
    means = results.group_by("language").agg(pl.col("value").mean())
    by_lang = dict(zip(means["language"], means["value"]))
    expected = sum(by_lang[c] for c in high) / 4 - sum(by_lang[c] for c in low) / 4
    assert tiers["difference"] == pytest.approx(expected, abs=0.01)
    assert tiers["ci_low"] < tiers["difference"] < tiers["ci_high"]
    answer = "yes" if tiers["ci_low"] > 0 else "no" if tiers["ci_high"] < 0 else "cannot say"
    assert tiers["answer"] == answer
    line = result.stats["headline"][0]
    words = {"yes": "Yes, on tatoeba", "no": "No, on tatoeba", "cannot say": "Cannot say on tatoeba"}[answer]
    assert line.startswith(words) and f"[{tiers['ci_low']:+.1f}, {tiers['ci_high']:+.1f}]" in line
    assert "4 high-tier (de,es,fr,it) and 4 low-tier languages (br,fy,ga,gd)" in line
