"""The whole pipeline from one config: stages run in order, and re-runs skip what is current."""

from __future__ import annotations

import polars as pl
import pytest

from workbench.config import parse_config
from workbench.languages import load_registry
from workbench.pipeline import run_pipeline
from workbench.run import Run
from workbench.status import run_status
from workbench.tables import FILTERED
from workbench.testing.openai_double import OpenAIDouble

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0, "model": "double"}


@pytest.fixture
def double(shared_data):
    with OpenAIDouble(shared_data) as server:
        yield server


def config_for(base_url: str, **filter_settings):
    return parse_config(
        {
            "run": {"name": "p", "languages": ["sw", "en"], "quota": 8, "seed": 3},
            "generate": {**FAST, "base_url": base_url},
            "filter": filter_settings,
            "pipeline": {"stages": ["plan", "generate", "filter", "audit"]},
        },
        where="test",
    )


def test_pipeline_runs_in_order_then_skips_everything_current(double, tmp_path):
    registry = load_registry()
    run = Run.create(tmp_path / "run")
    config = config_for(double.base_url)
    first = run_pipeline(run, config, registry)
    assert [(o.stage, o.state) for o in first] == [
        ("plan", "ran"), ("generate", "ran"), ("filter", "ran"), ("audit", "ran"),
        ("train", "not selected"), ("eval", "not selected"), ("report", "not selected"),
    ]
    sent = double.stats.total
    accepted = {code: run.read_table("accepted", code, FILTERED) for code in ("sw", "en")}
    rejected = {code: run.read_table("rejected", code, FILTERED) for code in ("sw", "en")}
    for code in ("sw", "en"):
        assert accepted[code].height + rejected[code].height == 8
    again = run_pipeline(run, config, registry)
    assert {o.state for o in again if o.stage in config.pipeline.stages} == {"skipped"}
    assert double.stats.total == sent  # nothing re-sent
    status = {row["stage"]: row["status"] for row in run_status(run.root)}
    assert status["audit"] == "complete" and status["train"] == "not run"


def test_changing_filter_settings_reruns_filter_and_audit_only_when_its_tables_change(double, tmp_path):
    registry = load_registry()
    run = Run.create(tmp_path / "run")
    run_pipeline(run, config_for(double.base_url), registry)
    generated_hash = run.stage_entry("generate")["outputs"]
    filtered = run.stage_entry("filter")["outputs"]
    sent = double.stats.total
    # a setting that changes no verdict here: filter runs, writes the same tables, the audit stays current
    outcomes = run_pipeline(run, config_for(double.base_url, allow_confusable=True), registry)
    states = {o.stage: o.state for o in outcomes}
    assert states["plan"] == states["generate"] == "skipped" and states["filter"] == "ran"
    assert run.stage_entry("filter")["outputs"] == filtered  # sw and en have no confusable neighbour here
    assert states["audit"] == "skipped"
    # one that rejects more: filter and audit run, nothing upstream does
    outcomes = run_pipeline(run, config_for(double.base_url, lid_threshold=0.9999), registry)
    states = {o.stage: o.state for o in outcomes}
    assert states["plan"] == states["generate"] == "skipped"
    assert states["filter"] == states["audit"] == "ran"
    assert run.stage_entry("generate")["outputs"] == generated_hash
    assert double.stats.total == sent
    summary = pl.read_parquet(run.stage_dir("audit") / "summary.parquet")
    assert set(summary["language"]) == {"sw", "en"}
    assert summary["accepted"].sum() == sum(run.read_table("accepted", c, FILTERED).height for c in ("sw", "en"))
    assert summary["accepted"].sum() < sum(info["rows"] for rel, info in filtered.items() if rel.startswith("accepted"))


@pytest.mark.slow
def test_whole_pipeline_trains_evaluates_and_reports(double, tmp_path):
    """Every stage, as `make quickstart` runs them, with the test double in place of SmolLM2."""
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    config = parse_config(
        {
            "run": {"name": "full", "languages": ["en", "de"], "quota": 12, "seed": 5},
            "generate": {**FAST, "base_url": double.base_url},
            "train": {"model": "minilm", "deepspeed": "none", "lora": False, "batch_size": 4,
                      "steps": 3, "warmup_steps": 1, "max_length": 64, "seeds": [5, 6]},
            "eval": {"task": "beir", "data_dir": str(repo / "examples" / "data" / "xquad"), "languages": ["en"]},
        },
        where="test",
    )
    registry = load_registry()
    run = Run.create(tmp_path / "run")
    outcomes = run_pipeline(run, config, registry)
    assert all(o.state == "ran" for o in outcomes), outcomes
    results = pl.read_parquet(run.stage_dir("eval") / "results.parquet")
    assert set(results["system"]) == {"bm25", "minilm", "minilm@ft-contract", "minilm-ft", "minilm-ft-seed6"}
    ndcg = {r["system"]: r for r in results.filter(pl.col("metric") == "ndcg_at_10").iter_rows(named=True)}
    assert all(0 <= r["value"] <= 100 for r in ndcg.values())
    assert (run.stage_dir("train") / "model" / "workbench_encoder.json").is_file()
    assert (run.stage_dir("train") / "seeds" / "6" / "model" / "workbench_encoder.json").is_file()
    # the base as it ships runs plain at 256 tokens; under the trained contract it runs exactly as the
    # fine-tuned model does (instruction, 64 tokens), so the two differ only in their weights
    how = {s: (r["instruction"], r["max_length"], r["contract_from"]) for s, r in ndcg.items()}
    assert how["minilm"] == ("none", 256, None)
    trained = str(run.stage_dir("train") / "model")
    assert how["minilm@ft-contract"] == (how["minilm-ft"][0], 64, trained) and how["minilm-ft"][1:] == (64, None)
    assert how["minilm-ft"][0] == "Given a query, retrieve relevant documents that answer the query"
    # two training seeds: one seed group, each row knows its seed
    assert (ndcg["minilm-ft"]["training_seed"], ndcg["minilm-ft-seed6"]["training_seed"]) == (5, 6)
    assert ndcg["minilm-ft-seed6"]["seed_group"] == "minilm-ft" and ndcg["minilm"]["training_seed"] is None
    comparisons = pl.read_parquet(run.stage_dir("report") / "comparisons.parquet").filter(pl.col("metric") == "ndcg_at_10")
    causes = {(r["system_a"], r["system_b"]): r for r in comparisons.iter_rows(named=True)}
    data = causes[("minilm@ft-contract", "minilm-ft")]
    assert data["cause"] == "training data" and data["seed_deltas"].startswith("5: ")
    assert causes[("minilm", "minilm@ft-contract")]["cause"] == "input format"
    measured = pl.read_parquet(run.stage_dir("report") / "measured.parquet").filter(
        (pl.col("system") == "minilm-ft") & (pl.col("metric") == "ndcg_at_10")).row(0, named=True)
    assert measured["n_seeds"] == 2 and measured["seed_values"].startswith("5: ")
    # fine-tuning changed the model: the exported embedder no longer encodes like the base MiniLM
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from workbench.encoder import minilm_path

    texts = ["Who won the Super Bowl?", "Der Rhein fließt durch Basel.", "A cat sleeps on the warm stone."]
    base = SentenceTransformer(str(minilm_path()), device="cpu").encode(texts, normalize_embeddings=True)
    tuned = SentenceTransformer(str(run.stage_dir("train") / "model"), device="cpu").encode(texts, normalize_embeddings=True)
    assert base.shape == tuned.shape
    assert np.abs(base - tuned).max() > 1e-4, "the trained model encodes exactly like the base model"
    html = (run.stage_dir("report") / "index.html").read_text(encoding="utf-8")
    assert "minilm-ft" in html and "<img" in html
    assert {o.state for o in run_pipeline(run, config, registry)} == {"skipped"}


def test_every_example_config_loads():
    from pathlib import Path

    from workbench.config import load_config

    examples = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml"))
    assert len(examples) >= 4
    for path in examples:
        load_config(path)  # raises one clear line on any unknown or bad field
