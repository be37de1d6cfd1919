"""Gap report over real inputs: BM25 measured here (bm25s on the full MIRACL Yoruba dev set and
XQuAD-de), MTEB-published MiniLM results copied into EVAL_RESULTS rows (labelled as such), the
published reference CSVs, and a fixture audit summary (counts labelled TEST FIXTURE)."""

from __future__ import annotations

import base64
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from workbench.config import ReportSection
from workbench.errors import UnknownLanguageError, WorkbenchError
from workbench.languages import load_registry
from workbench.report.stage import build_report, load_results, run_compare
from workbench.tables import AUDIT_SUMMARY, EVAL_RESULTS

import report_inputs as ri
from conftest import REPO

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
FOCUS = "minilm (MTEB copy)"


@pytest.fixture(scope="module")
def inputs(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report-inputs")
    return {
        "bm25": ri.bm25_results(shared_data, folder / "bm25.parquet"),
        "minilm": ri.mteb_results(shared_data, folder / "minilm.parquet", MINILM, FOCUS),
        "multi": ri.mteb_results(shared_data, folder / "multi.parquet",
                                 "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", "multi-minilm (MTEB copy)"),
        "audit": ri.audit_summary(folder / "audit.parquet"),
        "folder": folder,
        "shared": shared_data,
    }


@pytest.fixture(scope="module")
def report(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report"
    result = build_report(out, [inputs["bm25"], inputs["minilm"]], audit=inputs["audit"])
    return out, result


def _reference(shared: Path, system: str, language: str, metric: str = "ndcg_at_10") -> float:
    """A published number as the shipped reference file gives it (the BGE-M3 paper's current revision first)."""
    ref = pl.read_csv(REPO / "reports" / "reference" / "miracl_reference_v2.csv")
    ref = ref.filter((pl.col("system") == system) & (pl.col("language") == language) & (pl.col("metric") == metric)
                     & (pl.col("source") != "bge-m3-paper-early-table1"))
    return ref["value"][0]


def _mteb(shared: Path, language: str, metric: str = "ndcg_at_10") -> float:
    df = pl.read_csv(shared / "reference" / "mteb_miracl_ndcg10.csv")
    sel = df.filter((pl.col("model") == MINILM) & (pl.col("task") == "MIRACLRetrieval") & (pl.col("language") == language))
    return 100 * sel[metric][0]


def test_report_fixture_bm25_rows_cover_the_full_yoruba_corpus(inputs):
    # the fixture's own BM25 (tests/report_inputs.py); the workbench's BM25 on the same corpus is
    # checked in test_eval.py::test_full_yo_corpus_is_labelled_full_and_per_query_means_match
    rows = pl.read_parquet(inputs["bm25"]).filter(pl.col("task") == "MIRACLRetrieval")
    assert set(rows["metric"]) == {"ndcg_at_10", "recall_at_100"}
    assert rows["n_docs"].unique().to_list() == [49043] and rows["n_queries"].unique().to_list() == [119]
    ndcg = rows.filter(pl.col("metric") == "ndcg_at_10")["value"][0]
    # Lucene BM25 published 40.6 for yo; bm25s (no stemming, title+text) lands in the same region.
    assert 25 < ndcg < 70


def test_every_miracl_language_has_references_gaps_and_provenance(report, inputs):
    out, result = report
    assert result.stats["focus"] == FOCUS
    scores = pl.read_parquet(out / "scores.parquet")
    registry = load_registry()
    miracl = sorted(lang.code for lang in registry.miracl)
    assert len(miracl) == 18
    assert scores["provenance"].null_count() == 0 and (scores["provenance"].str.len_chars() > 20).all()
    published = scores.filter((pl.col("system") == "e5-mistral-7b-instruct (published)") & (pl.col("metric") == "ndcg_at_10")
                              & pl.col("shown"))
    assert sorted(published["language"]) == miracl
    assert published.filter(pl.col("language") == "yo")["value"][0] == _reference(inputs["shared"], "e5-mistral-7b-instruct", "yo")
    assert "arXiv 2402.03216" in published["provenance"][0]
    gaps = pl.read_parquet(out / "gaps.parquet")
    focus = gaps.filter((pl.col("system") == FOCUS) & (pl.col("metric") == "ndcg_at_10"))
    for code in miracl:  # the MTEB MiniLM copy covers all 18: a gap to each published system everywhere
        row = focus.filter((pl.col("language") == code) & (pl.col("reference") == "BM25 Lucene (published)"))
        assert row.height == 1
        expected = _reference(inputs["shared"], "bm25", code) - round(_mteb(inputs["shared"], code), 3)
        assert row["gap"][0] == pytest.approx(expected, abs=1e-3)
    # BM25 measured here is a reference point for the focus model on yo, and only there
    measured_bm25 = focus.filter(pl.col("reference") == "BM25 (measured here)")
    assert measured_bm25["language"].to_list() == ["yo"]
    bm25_yo = pl.read_parquet(inputs["bm25"]).filter((pl.col("dataset") == "miracl-yo-dev-full") & (pl.col("metric") == "ndcg_at_10"))["value"][0]
    assert measured_bm25["gap"][0] == pytest.approx(bm25_yo - round(_mteb(inputs["shared"], "yo"), 3), abs=1e-3)
    bm25_row = scores.filter((pl.col("system") == "bm25") & (pl.col("language") == "yo") & (pl.col("metric") == "ndcg_at_10"))
    assert "measured here by the workbench: bm25s on miracl-yo-dev-full" in bm25_row["provenance"][0]
    assert "119 queries over 49,043 passages" in bm25_row["provenance"][0]
    # Recall@100 published for e5-mistral on 16 languages: de and yo have none, and none is invented
    recall = scores.filter((pl.col("system") == "e5-mistral-7b-instruct (published)") & (pl.col("metric") == "recall_at_100")
                           & pl.col("shown"))
    assert sorted(set(miracl) - set(recall["language"])) == ["de", "yo"]
    # MTEB-published full-corpus rows are there with their file named
    mteb = scores.filter((pl.col("kind") == "mteb") & (pl.col("system") == "all-MiniLM-L6-v2 (MTEB full corpus)"))
    assert mteb.filter(pl.col("metric") == "ndcg_at_10").height == 18
    assert "MIRACLRetrieval.json" in mteb["provenance"][0]
    # XQuAD measured here stays out of the MIRACL gaps but is in the scores
    assert gaps.filter(pl.col("language") == "de", pl.col("system") == "bm25").height == 0
    assert scores.filter(pl.col("task") == "XQuADRetrieval").height == 2


def test_gaps_only_where_every_condition_matches(report, inputs):
    out, result = report
    gaps = pl.read_parquet(out / "gaps.parquet").filter((pl.col("system") == FOCUS) & (pl.col("metric") == "ndcg_at_10"))
    # the MTEB MiniLM copy ran without an instruction and without MIRACL train: BM25 (lexical, no instruction to
    # match) is comparable on all 18 languages; e5-mistral's published numbers state no instruction, and it was
    # trained on MIRACL train for 16 languages: no gap anywhere, and every cell says which condition differs
    lucene = gaps.filter(pl.col("reference") == "BM25 Lucene (published)")
    assert lucene.height == 18 and lucene["comparable"].all() and lucene["gap"].null_count() == 0
    e5 = gaps.filter(pl.col("reference") == "e5-mistral-7b-instruct (published)")
    assert e5.height == 18 and not e5["comparable"].any() and e5["gap"].null_count() == 18
    assert e5["differs"].str.contains("instruction: no instruction vs instruction not stated").all()
    sw = e5.filter(pl.col("language") == "sw")["differs"][0]
    assert "regime: zero-shot" in sw and "trained on this benchmark's training split" in sw
    de = e5.filter(pl.col("language") == "de")["differs"][0]
    assert "regime" not in de  # MIRACL has no German training data: zero-shot on both sides
    yo = e5.filter(pl.col("language") == "yo")["differs"][0]
    assert yo.startswith("disputed: 58.8 (arXiv 2402.03216, current revision, Table 2) against 79.7")
    # "auto" takes the reference comparable on the most languages; the groups average comparable gaps only
    meta = (out / "report.json").read_text()
    assert '"primary_reference": "BM25 Lucene (published)"' in meta
    groups = pl.read_parquet(out / "groups.parquet")
    registry = load_registry()
    high = [lang.code for lang in registry.miracl if lang.tier == "high"]
    hi = groups.filter((pl.col("system") == FOCUS) & (pl.col("metric") == "ndcg_at_10")
                       & (pl.col("group") == "high tier")).row(0, named=True)
    expected_hi = sum(_reference(inputs["shared"], "bm25", c) - round(_mteb(inputs["shared"], c), 3) for c in high) / len(high)
    assert hi["n_languages"] == 12 and hi["mean_gap"] == pytest.approx(expected_hi, abs=1e-2)


def test_headline_cannot_say_without_per_query_scores(report):
    # MTEB copies carry no per-query scores and MIRACL's low tier is yo alone: no "Yes", no "No"
    out, result = report
    headline = " ".join(result.stats["headline"])
    assert headline.startswith("Cannot say") and "Yes" not in headline
    tiers = pl.read_parquet(out / "tiers.parquet")
    assert set(tiers["answer"]) == {"cannot say"} and tiers["ci_low"].null_count() == tiers.height


def test_data_ties_audit_to_each_language(report, inputs):
    out, _ = report
    data = pl.read_parquet(out / "data.parquet")
    sw = data.filter(pl.col("language") == "sw").row(0, named=True)
    assert (sw["generated"], sw["accepted"], sw["acceptance_rate"]) == (40, 22, pytest.approx(0.55))
    assert sw["top_reject_reasons"].startswith("wrong_language:12") and sw["top_lid_confusions"] == "en:9; so:3"
    assert sw["primary_gap_ndcg_at_10"] == pytest.approx(
        _reference(inputs["shared"], "bm25", "sw") - round(_mteb(inputs["shared"], "sw"), 3), abs=1e-3)
    yo = data.filter(pl.col("language") == "yo").row(0, named=True)
    assert not yo["has_synthetic_data"] and "no synthetic data" in yo["note"] and "eval-only" in yo["note"]
    ar = data.filter(pl.col("language") == "ar").row(0, named=True)
    assert ar["note"] == "no synthetic data (not in the audit)" and ar["accepted"] is None
    assert "am" in data["language"].to_list()  # audited, not MIRACL: kept for the next plan
    html = (out / "index.html").read_text()
    assert "no synthetic data (eval-only language" in html and "wrong_language:12" in html


def test_fixture_reject_reasons_are_codes_the_filter_emits():
    from workbench.filter.rules import REASONS

    codes = [part.split(":")[0] for _, _, reasons, _, _ in ri.FIXTURE_AUDIT.values() for part in reasons.split("; ") if part]
    assert codes and set(codes) <= set(REASONS), set(codes) - set(REASONS)


def test_tidy_csv_and_parquet_hold_the_same_rows(report):
    out, _ = report
    for name in ("scores", "gaps", "groups", "data"):
        parquet = pl.read_parquet(out / f"{name}.parquet")
        with open(out / f"{name}.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == parquet.height and list(rows[0]) == parquet.columns
    summary = (out / "summary.md").read_text()
    assert summary.count("\n| ") >= 18 and "## Sources" in summary and "arXiv 2402.03216" in summary


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.hrefs, self.imgs, self.rows, self.table = set(), [], [], {}, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self.table = a.get("id")
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if tag in ("img", "script", "link", "iframe") and (a.get("src") or a.get("href")):
            self.imgs.append(a.get("src") or a.get("href"))
        if tag == "tr" and "lang-row" in a.get("class", ""):
            self.rows.setdefault(self.table, []).append(a["data-language"])


def _chromium_dom(path: Path) -> str:
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("/usr/bin/chromium is not installed here (CI installs Debian chromium for this test)")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--dump-dom", path.as_uri()],
            capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_html_renders_in_headless_chromium_with_18_rows_plots_and_no_broken_links(report):
    out, _ = report
    dom = _chromium_dom(out / "index.html")
    page = _Page()
    page.feed(dom)
    assert len(page.rows["languages-ndcg_at_10"]) == 18 and len(page.rows["languages-recall_at_100"]) == 18
    assert set(page.rows["languages-ndcg_at_10"]) == {lang.code for lang in load_registry().miracl}
    assert {"plot-groups", "plot-per-language", "plot-gap-vs-data"} <= page.ids
    measured_plots = {i for i in page.ids if i.startswith("plot-measured-")}
    assert len(measured_plots) == 4  # BM25 measured here: MIRACL yo and XQuAD de, nDCG@10 and Recall@100
    assert len(page.imgs) == 3 + len(measured_plots)
    for src in page.imgs:  # self-contained: every image is an inline PNG that decodes
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.hrefs
    local = [h for h in page.hrefs if not h.startswith("#")]  # the compare view, when there is one
    assert all((out / h).is_file() for h in local), local
    broken = sorted({h for h in page.hrefs if h.startswith("#") and h[1:] not in page.ids})
    assert not broken, f"links to missing anchors: {broken}"
    assert "Does the model leave low-resource languages behind" in dom
    between = dom.split('id="between"', 1)[1].split("</table>", 1)[0]
    assert FOCUS in between
    used = dom.split('id="reference-dir">', 1)[1].split("</code>", 1)[0]  # the shipped folder, as a reader places it
    assert (Path.cwd() / used).resolve() == (REPO / "reports" / "reference").resolve()


def test_compare_mode_shows_per_language_deltas(inputs, tmp_path):
    result = run_compare(str(inputs["minilm"]), str(inputs["multi"]), tmp_path / "cmp")
    table = pl.read_parquet(tmp_path / "cmp" / "compare.parquet")
    assert result.stats["rows"] == 36 == table.height  # 18 languages x 2 metrics
    yo = table.filter((pl.col("language") == "yo") & (pl.col("metric") == "ndcg_at_10")).row(0, named=True)
    assert yo["delta"] == pytest.approx(yo["value_b"] - yo["value_a"], abs=1e-3)
    assert "B minus A" in (tmp_path / "cmp" / "compare.md").read_text()
    dom = _chromium_dom(tmp_path / "cmp" / "compare.html")
    page = _Page()
    page.feed(dom)
    assert sum(len(v) for v in page.rows.values()) == 36 and len(page.imgs) == 2


# --- bad input: one clear error, nothing already written is lost -----------------------------
def _results(path: Path, rows: list[dict]) -> Path:
    base = {"system": "m", "model": "m", "task": "MIRACLRetrieval", "dataset": "d", "language": "yo", "split": "dev",
            "metric": "ndcg_at_10", "value": 40.0, "n_queries": 1, "n_docs": 1, "source": "measured", "created_at": "",
            "benchmark": "miracl", "task_kind": "retrieval", "corpus": "full", "revision": "r", "instruction": "none",
            "instruction_source": "none", "max_length": 256, "regime": "not stated", "contract_from": None,
            "training_seed": None, "seed_group": "m"}
    pl.DataFrame([{**base, **r} for r in rows], schema=EVAL_RESULTS).write_parquet(path)
    return path


@pytest.mark.parametrize("rows, message", [
    ([{"language": "xx"}], "unknown language code 'xx'"),
    ([{"language": "am"}], "'am' is not a MIRACL language"),
    ([{"value": 0.41}, {"language": "sw", "value": 0.37}], "mixed metrics: every ndcg_at_10 value is <= 1"),
    ([{"metric": "nDCG@10"}], "mixed metrics: 'nDCG@10'"),
    ([{"value": 140.0}], "outside 0-100"),
    ([], "results table is empty"),
    ([{"corpus": "hardneg"}], "'hardneg' is not a corpus the report knows"),
])
def test_bad_results_give_one_clear_error(tmp_path, rows, message):
    path = _results(tmp_path / "bad.parquet", rows)
    with pytest.raises(WorkbenchError) as err:
        load_results([path], load_registry())
    line = str(err.value)
    assert message in line and str(path) in line and "\n" not in line


def test_every_metric_eval_writes_loads_in_the_report_and_has_a_label(tmp_path):
    """workbench.metrics owns the names: each one eval measures is one the report's loader accepts,
    and every metric the report, the model card or the tier question shows has its display label."""
    from workbench import conditions
    from workbench.metrics import BITEXT_METRICS, METRIC_LABELS, RETRIEVAL_METRICS
    from workbench.report.analysis import METRICS as REPORTED
    from workbench.train.card import CARD_METRICS

    rows = [{"metric": metric, "value": 40.0 + i} for i, metric in enumerate(RETRIEVAL_METRICS)]
    loaded = load_results([_results(tmp_path / "all.parquet", rows)], load_registry())
    assert set(loaded["metric"]) == set(RETRIEVAL_METRICS)
    bitext = [{"metric": metric, "task": "Tatoeba", "benchmark": "tatoeba", "task_kind": "bitext-mining",
               "language": "sw"} for metric in BITEXT_METRICS]
    path = _results(tmp_path / "bitext.parquet", bitext)
    assert set(load_results([path], load_registry())["metric"]) == set(BITEXT_METRICS)
    shown = {*RETRIEVAL_METRICS, *REPORTED, *CARD_METRICS, *conditions.PRIMARY_METRIC.values()} - {"precision", "recall"}
    assert shown <= set(METRIC_LABELS)
    assert METRIC_LABELS["ndcg_at_10"] == "nDCG@10" and METRIC_LABELS["recall_at_100"] == "Recall@100"
    assert METRIC_LABELS["mrr_at_10"] == "MRR@10"


def test_results_without_condition_columns_are_refused_with_the_fix(tmp_path):
    # a table written by an eval from before the condition columns: one line, naming the file and the fix
    old = tmp_path / "old.parquet"
    path = _results(tmp_path / "new.parquet", [{}])
    pl.read_parquet(path).drop("benchmark", "corpus", "instruction", "regime").write_parquet(old)
    with pytest.raises(WorkbenchError) as err:
        load_results([old], load_registry())
    line = str(err.value)
    assert "without condition columns (benchmark, corpus, instruction, regime)" in line and str(old) in line
    assert "re-run eval" in line and "\n" not in line


def test_unknown_source_in_a_reference_file_is_a_data_error(tmp_path):
    folder = tmp_path / "reference"
    shutil.copytree(REPO / "reports" / "reference", folder)
    lines = (folder / "miracl_reference_v2.csv").read_text().splitlines()
    lines[5] = lines[5].replace("bge-m3-paper-early-table1", "some-blog-post")
    (folder / "miracl_reference_v2.csv").write_text("\n".join(lines) + "\n")
    from workbench.report.references import load_references

    with pytest.raises(WorkbenchError) as err:
        load_references(folder)
    line = str(err.value)
    assert "unknown source 'some-blog-post'" in line and "miracl_reference_v2.csv: row 5 (line 6)" in line
    assert "sources.toml" in line and "references.py" not in line


def test_the_per_language_reference_columns_come_from_sources_toml(inputs, tmp_path):
    from workbench.report.references import load_references

    folder = tmp_path / "reference"
    shutil.copytree(REPO / "reports" / "reference", folder)
    assert load_references(folder).report_columns == (
        "e5-mistral-7b-instruct (published)", "e5-mistral-7b-instruct (MTEB hard negatives v1, mteb default prompt)",
        "multilingual-e5-large (published)", "BM25 Lucene (published)")
    # showing another reference is one line in the data file: bge-m3 between e5-mistral and its MTEB numbers
    toml = folder / "sources.toml"
    text = toml.read_text()
    toml.write_text(text.replace('model = "BAAI/bge-m3"\n', 'model = "BAAI/bge-m3"\nreport_column = 1.5\n'))
    with pytest.raises(WorkbenchError, match=r"sources.toml: \[systems.bge-m3-dense\], field 'report_column'"):
        load_references(folder)
    toml.write_text(text.replace('model = "BAAI/bge-m3"\n', 'model = "BAAI/bge-m3"\nreport_column = 3\n'))
    with pytest.raises(WorkbenchError, match=r"position 3 is also given to \[systems.multilingual-e5-large\]"):
        load_references(folder)
    toml.write_text(text.replace("report_column = 1\n", "report_column = 10\n")
                    .replace('model = "BAAI/bge-m3"\n', 'model = "BAAI/bge-m3"\nreport_column = 5\n'))
    build_report(tmp_path / "out", [inputs["bm25"], inputs["minilm"]], audit=inputs["audit"],
                 config=ReportSection(reference_dir=str(folder)))
    header = next(line for line in (tmp_path / "out" / "summary.md").read_text().splitlines()
                  if line.startswith("| language | tier |"))
    assert header.split(" | ")[3:] == [
        "e5-mistral-7b-instruct (MTEB hard negatives v1, mteb default prompt)", "multilingual-e5-large (published)",
        "BM25 Lucene (published)", "bge-m3 dense (published)", "e5-mistral-7b-instruct (published)",
        "BM25 (measured here) |"]


def test_shipped_references_win_unless_asked(tmp_path, monkeypatch):
    from workbench.report.references import reference_dir

    monkeypatch.delenv("WORKBENCH_REFERENCE_DIR", raising=False)
    assert reference_dir() == REPO / "reports" / "reference"  # even with ../shared/data/reference next to the checkout
    monkeypatch.setenv("WORKBENCH_REFERENCE_DIR", str(tmp_path))
    with pytest.raises(WorkbenchError, match=r"no miracl_reference_v2.csv .*named by \$WORKBENCH_REFERENCE_DIR"):
        reference_dir()
    assert reference_dir(REPO / "reports" / "reference") == REPO / "reports" / "reference"  # [report] reference_dir wins


def test_unknown_language_is_its_own_error_type(tmp_path):
    with pytest.raises(UnknownLanguageError):
        load_results([_results(tmp_path / "x.parquet", [{"language": "xx"}])], load_registry())


def test_no_inputs_empty_audit_and_conflicts_are_errors(inputs, tmp_path):
    with pytest.raises(WorkbenchError, match="no results tables given"):
        build_report(tmp_path / "o", [])
    empty_audit = tmp_path / "audit.parquet"
    pl.DataFrame(schema=AUDIT_SUMMARY).write_parquet(empty_audit)
    with pytest.raises(WorkbenchError, match="audit summary is empty"):
        build_report(tmp_path / "o", [inputs["bm25"]], audit=empty_audit)
    a = _results(tmp_path / "a.parquet", [{"value": 40.0}])
    b = _results(tmp_path / "b.parquet", [{"value": 41.0}])
    with pytest.raises(WorkbenchError, match="conflicting values for system 'm'"):
        load_results([a, b], load_registry())
    with pytest.raises(WorkbenchError, match="mixed metrics: A and B share no"):
        run_compare(str(a), str(_results(tmp_path / "c.parquet", [{"metric": "recall_at_100"}])), tmp_path / "cmp")
    assert not (tmp_path / "o").exists() and not (tmp_path / "cmp").exists()


def test_failed_rebuild_keeps_the_existing_report(report, tmp_path):
    out, _ = report
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(WorkbenchError, match="cannot read Parquet"):
        build_report(out, [corrupt])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# --- CLI --------------------------------------------------------------------------------------
def _cli(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "workbench.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_cli_report_on_a_run_directory_and_errors_in_one_line(inputs, tmp_path):
    from workbench.config import RunConfig
    from workbench.run import Run

    run = Run.create(tmp_path / "run")
    run.config_path.write_text(RunConfig().to_toml())  # as the CLI would: it reads a run's settings from there
    (run.root / "eval").mkdir()
    (run.root / "audit").mkdir()
    shutil.copy(inputs["minilm"], run.root / "eval" / "results.parquet")
    shutil.copy(inputs["audit"], run.root / "audit" / "summary.parquet")
    ok = _cli("report", run.root, "--results", inputs["bm25"], "--reference", "multilingual-e5-large (published)")
    assert ok.returncode == 0, ok.stderr
    assert "multilingual-e5-large (published)" in ok.stdout
    html = (run.root / "report" / "index.html").read_text()
    assert "primary reference is <strong>multilingual-e5-large (published)</strong>" in html
    entry = run.stage_entry("report")
    assert entry["status"] == "complete" and "report/index.html" in entry["outputs"]
    bad = _cli("report", "--results", _results(tmp_path / "x.parquet", [{"language": "xx"}]), "--out", tmp_path / "o")
    assert bad.returncode == 2 and "unknown language code 'xx'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    typo = _cli("report", tmp_path / "no-such-run")
    assert typo.returncode == 2 and "not a run directory" in typo.stderr and not (tmp_path / "no-such-run").exists()
    wrong_ref = _cli("report", "--results", inputs["bm25"], "--out", tmp_path / "o", "--reference", "gpt")
    assert wrong_ref.returncode == 2 and "primary_reference" in wrong_ref.stderr


def test_cli_results_join_the_tables_the_run_config_already_names(inputs, tmp_path):
    import json

    from workbench.config import RunConfig, load_config
    from workbench.run import Run

    run = Run.create(tmp_path / "run")
    (run.root / "eval").mkdir()
    shutil.copy(inputs["minilm"], run.root / "eval" / "results.parquet")
    run.config_path.write_text(RunConfig.model_validate({"report": {"results": [str(inputs["multi"])]}}).to_toml())
    done = _cli("report", run.root, "--results", inputs["bm25"])
    assert done.returncode == 0, done.stderr
    read = {i["path"] for i in json.loads((run.root / "report" / "report.json").read_text())["inputs"]
            if i["role"] == "results"}
    assert read == {str(run.root / "eval" / "results.parquet"), str(inputs["multi"]), str(inputs["bm25"])}
    assert load_config(run.config_path).report.results == [str(inputs["multi"]), str(inputs["bm25"])]


def test_cli_compare(inputs, tmp_path):
    done = _cli("report", "--compare", inputs["minilm"], f"{inputs['multi']}@multi-minilm (MTEB copy)", "--out", tmp_path / "c")
    assert done.returncode == 0, done.stderr
    assert pl.read_parquet(tmp_path / "c" / "compare.parquet").height == 36


def test_several_results_tables_in_one_report_show_each_measured_system(inputs, tmp_path):
    """BM25 + a baseline + the system under study, as the committed example report will be built."""
    out = tmp_path / "r"
    result = build_report(out, [inputs["bm25"], inputs["multi"], inputs["minilm"]], audit=inputs["audit"])
    assert result.stats["focus"] == FOCUS  # the last non-BM25 system given
    html = (out / "index.html").read_text()
    header = html.split('id="languages-ndcg_at_10"', 1)[1].split("</thead>", 1)[0]
    assert header.index(FOCUS) < header.index("multi-minilm (MTEB copy)") < header.index("e5-mistral-7b-instruct (published)")
    gaps = pl.read_parquet(out / "gaps.parquet")
    assert {"bm25", FOCUS, "multi-minilm (MTEB copy)"} == set(gaps["system"])
    with pytest.raises(WorkbenchError, match="focus system 'nope' is not in the results"):
        from workbench.config import ReportSection

        build_report(tmp_path / "x", [inputs["minilm"]], config=ReportSection(focus="nope"))


def test_markdown_is_not_html_escaped_and_html_is(report):
    out, _ = report
    summary = (out / "summary.md").read_text()
    assert "MIRACL's own low-resource set" in summary and "&#39;" not in summary
    html = (out / "index.html").read_text()
    assert "MIRACL&#39;s own low-resource set" in html


def test_headline_says_when_the_question_cannot_be_answered(inputs, tmp_path):
    yo_only = ri.mteb_results(inputs["shared"], tmp_path / "yo.parquet", MINILM, "minilm-yo", languages=["yo"])
    result = build_report(tmp_path / "r", [inputs["bm25"], yo_only])
    assert result.stats["headline"][0].startswith("Cannot say")
    html = (tmp_path / "r" / "index.html").read_text()
    assert html.count("not measured</td>") == 2 * 17  # 17 languages x 2 metrics, shown as such
    assert "no audit given" in html
