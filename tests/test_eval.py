"""Eval stage on small real data: MIRACL-format (a Yoruba subset) and XQuAD BEIR folders.

BM25 runs through mteb's evaluator here; the metrics in results.parquet are checked against an
independent pytrec_eval computation on the TREC run file the stage writes.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import pytrec_eval

from workbench.config import RunConfig
from workbench.errors import UnknownLanguageError, WorkbenchError
from workbench.eval.local_tasks import load_beir_split, load_miracl_split
from workbench.eval.stage import run_eval
from workbench.languages import load_registry
from workbench.run import Run
from workbench.tables import EVAL_PER_QUERY, EVAL_RESULTS

from conftest import REPO

EXAMPLE_XQUAD = REPO / "examples" / "data" / "xquad"


@pytest.fixture(scope="session")
def mini_miracl(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MIRACL-format folder: the first 25 yo dev topics, their qrels, every judged passage plus
    400 other real passages. One topic's judgments are all turned non-relevant and one topic gets
    no qrels, to exercise mteb's handling of both."""
    src = shared_data / "miracl"
    out = tmp_path_factory.mktemp("miracl")
    topics = (src / "topics.miracl-v1.0-yo-dev.tsv").read_text(encoding="utf-8").splitlines()[:25]
    qids = [line.split("\t")[0] for line in topics]
    qrels = [
        line.split("\t")
        for line in (src / "qrels.miracl-v1.0-yo-dev.tsv").read_text(encoding="utf-8").splitlines()
        if line.split("\t")[0] in set(qids)
    ]
    no_positive, no_qrels = qids[1], qids[2]
    qrels = [[q, z, d, "0" if q == no_positive else r] for q, z, d, r in qrels if q != no_qrels]
    judged = {row[2] for row in qrels}
    keep, others = [], 0
    with gzip.open(src / "corpus" / "yo" / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            docid = json.loads(line)["docid"]
            if docid in judged:
                keep.append(line)
            elif others < 400:
                keep.append(line)
                others += 1
    (out / "topics.miracl-v1.0-yo-dev.tsv").write_text("\n".join(topics) + "\n", encoding="utf-8")
    (out / "qrels.miracl-v1.0-yo-dev.tsv").write_text("".join("\t".join(r) + "\n" for r in qrels), encoding="utf-8")
    (out / "corpus" / "yo").mkdir(parents=True)
    with gzip.open(out / "corpus" / "yo" / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(keep)
    return out


def _config(**eval_section) -> RunConfig:
    return RunConfig.model_validate({"run": {"name": "t"}, "eval": eval_section})


def _pytrec(run_file: Path, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Independent scores: pytrec_eval over the TREC run file; qrels queries absent from it score 0."""
    ranking: dict[str, dict[str, float]] = {q: {} for q in qrels}
    for line in run_file.read_text(encoding="utf-8").splitlines():
        qid, _, doc, _, score, _ = line.split()
        ranking.setdefault(qid, {})[doc] = float(score)
    scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(ranking)
    n = len(qrels)
    return {
        "ndcg_at_10": 100 * sum(s["ndcg_cut_10"] for s in scores.values()) / n,
        "recall_at_100": 100 * sum(s["recall_100"] for s in scores.values()) / n,
    }


def _per_query_means(run: Run) -> pl.DataFrame:
    """results.parquet joined with the mean and count of its per-query rows, per group."""
    key = ["system", "model", "task", "dataset", "language", "split", "metric"]
    per_query = run.read_table("eval", "per_query", EVAL_PER_QUERY)
    means = per_query.group_by(key).agg(pl.col("score").mean().alias("mean"), pl.len().alias("rows"))
    return run.read_table("eval", "results", EVAL_RESULTS).join(means, on=key, how="left")


def test_bm25_on_miracl_subset_matches_pytrec_eval(mini_miracl: Path, tmp_path: Path) -> None:
    run = Run.create(tmp_path / "run")
    result = run_eval(run, _config(model="bm25", task="miracl", corpus="full", data_dir=str(mini_miracl)), load_registry())
    table = run.read_table("eval", "results", EVAL_RESULTS)
    # the folder holds part of the yo corpus: labelled a subset whatever --full said
    docs = len(load_miracl_split(mini_miracl, "yo").corpus)
    label = f"miracl-yo-dev-subset{docs}"
    assert set(table["system"]) == {"bm25"} and set(table["dataset"]) == {label}
    assert set(table["task"]) == {"MIRACLRetrievalSubset"}
    counts = result.stats["query_counts"][label]
    assert counts["queries_total"] == 25
    assert counts["queries_without_qrels"] == 1  # left out, as mteb does, and counted
    assert counts["queries_without_positives"] == 1  # kept, scores 0
    row = {r["metric"]: r for r in table.iter_rows(named=True)}
    assert row["ndcg_at_10"]["n_queries"] == 24
    qrels = load_miracl_split(mini_miracl, "yo").qrels
    independent = _pytrec(run.root / "eval" / "runs" / "bm25" / "MIRACLRetrievalSubset-yo-dev.trec", qrels)
    for metric, value in independent.items():
        assert row[metric]["value"] == pytest.approx(value, abs=2e-3), metric
    assert 5 < row["ndcg_at_10"]["value"] < 100
    # per-query rows: the 24 evaluated queries for every metric, the all-non-relevant one scoring 0
    joined = _per_query_means(run)
    assert set(joined["rows"]) == {24}
    for rec in joined.iter_rows(named=True):
        assert rec["mean"] == pytest.approx(rec["value"], abs=2e-3), rec["metric"]
    # Lucene BM25 published 40.6 for yo; the workbench's bm25s (no stemming, title+text) lands in that region
    ndcg = joined.filter(pl.col("metric") == "ndcg_at_10")["value"][0]
    assert 25 < ndcg < 70
    per_query = run.read_table("eval", "per_query", EVAL_PER_QUERY)
    no_positive = [q for q, docs in qrels.items() if docs and not any(r > 0 for r in docs.values())]
    assert len(no_positive) == 1
    assert set(per_query.filter(pl.col("query_id") == no_positive[0])["score"]) == {0.0}
    # the data source is recorded with each file's checksum
    sources = json.loads((run.root / "eval" / "data_sources.json").read_text())
    assert sources[label]["corpus"] == f"subset{docs}" and sources[label]["full_corpus_docs"] == 49043
    assert len(sources[label]["files"]["corpus/yo/corpus.jsonl.gz"]) == 64
    # the conditions it was measured under are columns (the report never reads them out of the label)
    first = table.row(0, named=True)
    assert (first["benchmark"], first["task_kind"], first["corpus"], first["instruction"], first["regime"]) == \
        ("miracl", "retrieval", "subset", "none", "no training (lexical)")
    assert first["max_length"] is None and first["seed_group"] == "bm25" and first["training_seed"] is None
    assert first["revision"].startswith("sha256:") and len(first["revision"]) == len("sha256:") + 12
    assert per_query["cluster"].null_count() == 0
    # mteb's own result JSON is kept beside the table
    assert list((run.root / "eval" / "mteb").rglob("MIRACLRetrievalSubset.json"))
    assert run.stage_entry("eval")["status"] == "complete"


def test_xquad_bm25_rows_upsert_and_languages(tmp_path: Path) -> None:
    run = Run.create(tmp_path / "run")
    registry = load_registry()
    run_eval(run, _config(model="bm25", task="xquad", data_dir=str(EXAMPLE_XQUAD), languages=["en", "th"]), registry)
    run_eval(run, _config(model="bm25", task="xquad", data_dir=str(EXAMPLE_XQUAD), languages=["th", "de"]), registry)
    table = run.read_table("eval", "results", EVAL_RESULTS)
    ndcg = table.filter(pl.col("metric") == "ndcg_at_10")
    assert sorted(ndcg["dataset"]) == ["xquad-de", "xquad-en", "xquad-th"]  # th replaced, not duplicated
    joined = _per_query_means(run)  # per-query rows replaced the same way
    for rec in joined.iter_rows(named=True):
        assert rec["rows"] == rec["n_queries"] and rec["mean"] == pytest.approx(rec["value"], abs=2e-3)
    assert set(ndcg["n_docs"]) == {60}
    # 60 of XQuAD's 240 paragraphs: a subset; its questions are clustered by the paragraph that answers them
    assert set(ndcg["corpus"]) == {"subset"} and set(ndcg["benchmark"]) == {"xquad"}
    per_query = run.read_table("eval", "per_query", EVAL_PER_QUERY).filter(pl.col("metric") == "ndcg_at_10")
    for lang in ("en", "th", "de"):
        part = per_query.filter(pl.col("language") == lang)
        qrels = load_beir_split(EXAMPLE_XQUAD / lang, lang).qrels
        paragraphs = {q: next(d for d, r in docs.items() if r > 0) for q, docs in qrels.items()}
        # one cluster per paragraph: two questions share a cluster exactly when they share their paragraph
        by_cluster = part.group_by("cluster").agg(pl.col("query_id"))
        assert by_cluster.height == len(set(paragraphs.values())) == 60
        for ids in by_cluster["query_id"].to_list():
            assert len({paragraphs[q] for q in ids}) == 1
    # Thai has no spaces: character bigrams must still find most answers
    th = ndcg.filter(pl.col("language") == "th")["value"][0]
    assert th > 50
    for lang in ("en", "th", "de"):
        split = load_beir_split(EXAMPLE_XQUAD / lang, lang)
        independent = _pytrec(run.root / "eval" / "runs" / "bm25" / f"XQuADRetrieval-{lang}-test.trec", split.qrels)
        assert ndcg.filter(pl.col("language") == lang)["value"][0] == pytest.approx(independent["ndcg_at_10"], abs=2e-3)


def test_full_yo_corpus_is_labelled_full_and_per_query_means_match(shared_data: Path, tmp_path: Path) -> None:
    """The complete MIRACL yo corpus (49,043 passages) without --full: labelled full, not hard negatives;
    every per-query group (119 queries) averages to mteb's aggregate."""
    run = Run.create(tmp_path / "run")
    run_eval(run, _config(model="bm25", task="miracl", languages=["yo"], data_dir=str(shared_data / "miracl")), load_registry())
    joined = _per_query_means(run)
    assert set(joined["task"]) == {"MIRACLRetrieval"} and set(joined["dataset"]) == {"miracl-yo-dev-full"}
    assert set(joined["n_docs"]) == {49043} and set(joined["rows"]) == {119}
    assert set(joined["metric"]) == {"ndcg_at_10", "recall_at_100", "recall_at_10", "mrr_at_10", "ndcg_at_100"}
    for rec in joined.iter_rows(named=True):
        assert rec["mean"] == pytest.approx(rec["value"], abs=2e-3), rec["metric"]
    # Lucene BM25 published 40.6 for yo; the workbench's bm25s (no stemming, title+text) lands in that region
    ndcg = joined.filter(pl.col("metric") == "ndcg_at_10")["value"][0]
    assert 25 < ndcg < 70
    # and per query, nDCG@10 equals an independent pytrec_eval run over the TREC file
    qrels = load_miracl_split(shared_data / "miracl", "yo").qrels
    ranking: dict[str, dict[str, float]] = {q: {} for q in qrels}
    for line in (run.root / "eval" / "runs" / "bm25" / "MIRACLRetrieval-yo-dev.trec").read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        ranking[qid][doc] = float(score)
    independent = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(ranking)
    per_query = run.read_table("eval", "per_query", EVAL_PER_QUERY).filter(pl.col("metric") == "ndcg_at_10")
    ours = dict(zip(per_query["query_id"], per_query["score"], strict=True))
    assert ours.keys() == independent.keys()
    for qid, scores in independent.items():
        assert ours[qid] == pytest.approx(100 * scores["ndcg_cut_10"], abs=1e-6), qid


def test_beir_task_named_after_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "my-set"
    shutil.copytree(EXAMPLE_XQUAD / "en", folder)
    run = Run.create(tmp_path / "run")
    run_eval(run, _config(model="bm25", task="beir", data_dir=str(folder)), load_registry())
    table = run.read_table("eval", "results", EVAL_RESULTS)
    assert set(table["task"]) == {"BEIR-my-set"} and set(table["dataset"]) == {"beir-my-set"}
    assert (run.root / "eval" / "runs" / "bm25" / "BEIR-my-set-my-set-test.trec").is_file()


def test_unknown_language_and_task(mini_miracl: Path, tmp_path: Path) -> None:
    registry = load_registry()
    run = Run.create(tmp_path / "run")
    with pytest.raises(UnknownLanguageError, match="not a MIRACL language"):
        run_eval(run, _config(model="bm25", data_dir=str(mini_miracl), languages=["it"]), registry)
    with pytest.raises(UnknownLanguageError, match="unknown language code 'yoo'"):
        run_eval(run, _config(model="bm25", data_dir=str(mini_miracl), languages=["yoo"]), registry)
    with pytest.raises(UnknownLanguageError, match="no data for language 'sw'.*has de en hi th"):
        run_eval(run, _config(model="bm25", task="xquad", data_dir=str(EXAMPLE_XQUAD), languages=["sw"]), registry)
    with pytest.raises(WorkbenchError, match="--data-dir"):
        run_eval(run, _config(model="bm25", task="xquad"), registry)
    assert not run.has_table("eval", "results")


def test_missing_file_and_mismatched_qrels(mini_miracl: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "corpus" / "yo").mkdir(parents=True)
    (broken / "topics.miracl-v1.0-yo-dev.tsv").write_bytes((mini_miracl / "topics.miracl-v1.0-yo-dev.tsv").read_bytes())
    (broken / "corpus" / "yo" / "corpus.jsonl.gz").write_bytes((mini_miracl / "corpus" / "yo" / "corpus.jsonl.gz").read_bytes())
    with pytest.raises(WorkbenchError, match=r"qrels file missing") as err:
        load_miracl_split(broken, "yo")
    assert "qrels.miracl-v1.0-yo-dev.tsv" in str(err.value)
    qrels = (mini_miracl / "qrels.miracl-v1.0-yo-dev.tsv").read_text(encoding="utf-8")
    extra = "999999\tQ0\t1#0\t1\n999998\tQ0\t2#0\t0\n" + "0\tQ0\tnot-a-doc#1\t1\n"
    (broken / "qrels.miracl-v1.0-yo-dev.tsv").write_text(qrels + extra, encoding="utf-8")
    with pytest.raises(WorkbenchError, match=r"3 query ids not in the topics.*2 relevant doc ids not in the corpus"):
        load_miracl_split(broken, "yo")


def test_beir_folder_missing_queries(tmp_path: Path) -> None:
    folder = tmp_path / "en"
    folder.mkdir()
    for name in ("corpus.jsonl", "qrels.tsv"):
        (folder / name).write_bytes((EXAMPLE_XQUAD / "en" / name).read_bytes())
    with pytest.raises(WorkbenchError, match=r"queries file missing"):
        load_beir_split(folder, "en")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", "eval", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=300,
    )


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    proc = _cli("--run", str(tmp_path / "r"), "--model", "bm25", "--task", "msmarco")
    assert proc.returncode == 2 and "unknown task 'msmarco'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _cli("--run", str(tmp_path / "r"), "--model", str(tmp_path / "nope"), "--task", "xquad", "--data-dir", str(EXAMPLE_XQUAD))
    assert proc.returncode == 2 and "model folder not found" in proc.stderr
    # a contract to borrow from a folder that holds none: one line before any model loads, no run created
    proc = _cli("--run", str(tmp_path / "c"), "--model", "minilm", "--contract-from", str(tmp_path), "--task", "xquad",
                "--data-dir", str(EXAMPLE_XQUAD))
    assert proc.returncode == 2 and "no workbench_encoder.json to borrow" in proc.stderr and "--contract-from" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()
    # hub unreachable (offline here): one clear line pointing at --data-dir
    proc = _cli("--run", str(tmp_path / "r"), "--model", "bm25", "--task", "miracl", "--languages", "yo",
                env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot load mteb/MIRACLRetrievalHardNegatives from the Hugging Face hub" in proc.stderr
    assert "--data-dir" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_minilm_through_mteb_then_rerun_is_fully_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    import torch

    from workbench.eval import encoders

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    run = Run.create(tmp_path / "run")
    config = _config(model="minilm", task="xquad", data_dir=str(EXAMPLE_XQUAD), languages=["en"], bm25=True)
    run_eval(run, config, load_registry())
    table = run.read_table("eval", "results", EVAL_RESULTS).filter(pl.col("metric") == "ndcg_at_10")
    values = dict(zip(table["system"], table["value"], strict=True))
    assert set(values) == {"minilm", "bm25"}
    assert values["minilm"] > 60  # an English model on English XQuAD
    split = load_beir_split(EXAMPLE_XQUAD / "en", "en")
    independent = _pytrec(run.root / "eval" / "runs" / "minilm" / "XQuADRetrieval-en-test.trec", split.qrels)
    assert values["minilm"] == pytest.approx(independent["ndcg_at_10"], abs=2e-3)

    def no_encoding(self, texts, batch_size):
        raise AssertionError(f"re-encoded {len(texts)} texts")

    monkeypatch.setattr(encoders._SentenceTransformerBackend, "encode", no_encoding)
    (run.root / "eval" / "results.parquet").unlink()  # the stage runs again (a current one would not)
    assert not run_eval(run, config, load_registry()).current  # everything comes from RUN/eval/embeddings
    again = run.read_table("eval", "results", EVAL_RESULTS).filter(pl.col("metric") == "ndcg_at_10")
    assert dict(zip(again["system"], again["value"], strict=True)) == values


def test_every_eval_system_key_names_systems_and_no_other_key_is_accepted(tmp_path: Path) -> None:
    """workbench.systems owns the eval_systems vocabulary: the config accepts exactly its keys and
    pipeline_systems turns each one into at least one system (a key added there without a branch fails)."""
    from workbench.config import parse_config
    from workbench.errors import ConfigError
    from workbench.eval.stage import pipeline_systems
    from workbench.systems import BM25, EVAL_SYSTEM_KEYS, MINILM

    run = Run.create(tmp_path / "run")
    for key in EVAL_SYSTEM_KEYS:
        config = parse_config({"pipeline": {"eval_systems": [key]}}, where="run.toml")
        systems = pipeline_systems(run, config.pipeline, config.train)
        assert systems and {settings["key"] for settings in systems.values()} == {key}, key
    config = parse_config({"pipeline": {"eval_systems": list(EVAL_SYSTEM_KEYS)}}, where="run.toml")
    models = {name: settings["model"] for name, settings in pipeline_systems(run, config.pipeline, config.train).items()}
    assert models[BM25] == BM25 and models[MINILM] == MINILM  # no [train] model: the demo embedder is the base
    with pytest.raises(ConfigError, match="pipeline.eval_systems"):
        parse_config({"pipeline": {"eval_systems": ["bm42"]}}, where="run.toml")
