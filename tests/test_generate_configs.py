"""Configs do what their names say: ``[generate] batch = true`` through ``workbench run`` (against the
OpenAI test double's Files and Batches endpoints), and every example config up to the network/GPU."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from workbench.config import load_config
from workbench.generate import budget
from workbench.generate.stage import run_generate
from workbench.languages import load_registry
from workbench.plan import run_plan
from workbench.run import Run
from workbench.runconfig import resolve_run_config
from workbench.tables import FILTERED, GENERATED, PLAN
from workbench.testing.openai_double import Faults, OpenAIDouble

from conftest import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.toml"))


def _batch_config(path: Path, base_url: str) -> Path:
    path.write_text(f'''
[run]
name = "batch"
seed = 3
languages = ["sw", "de"]
quota = 8

[generate]
base_url = "{base_url}"
model = "double"
batch = true
batch_poll_s = 0.05
batch_poll_max_s = 0.2
backoff_base_s = 0.01
backoff_max_s = 0.05

[pipeline]
stages = ["plan", "generate", "filter"]
''')
    return path


def test_workbench_run_uses_the_batch_api_end_to_end_and_resumes(shared_data, tmp_path):
    with OpenAIDouble(shared_data, Faults(rate_truncated=0.3, rate_500=0.1, max_faults_per_key=1, seed=5)) as double:
        config_path = _batch_config(tmp_path / "batch.toml", double.base_url)
        run_dir = tmp_path / "runs" / "batch"
        # an earlier invocation submitted the brainstorm batch and stopped (interrupted): resume from there
        run, config = resolve_run_config(run_dir, config_path)
        registry = load_registry()
        run_plan(run, config, registry)
        first = run_generate(run, config, registry, batch=True)
        assert first.outputs == {} and first.stats["batch_jobs"]
        submitted = {key for key in double.stats.received}
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.run([sys.executable, "-m", "workbench.cli", "run", str(config_path), "--run-dir", str(run_dir)],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "open batch(es); next poll in" in proc.stdout  # the poll loop says what it waits for
        run = Run.open(run_dir)
        rows = pl.concat([run.read_table("generated", code, GENERATED) for code in ("sw", "de")])
        assert rows.height == 16 and set(rows["status"]) == {"ok"}
        assert run.stage_entry("generate")["status"] == "complete"
        # every request went through the Batch API, none as a direct chat request
        assert double.stats.total == double.stats.batch_lines > 0
        # the brainstorm batch submitted before the interruption was polled, not submitted again
        faulted = {key for counter in double.stats.faults.values() for key in counter}
        assert all(double.stats.received[key] == 1 for key in submitted - faulted)
        # the pipeline went on after generation
        for code in ("sw", "de"):
            kept = run.read_table("accepted", code, FILTERED).height + run.read_table("rejected", code, FILTERED).height
            assert kept == 8
        # a truncated line was resubmitted once with twice the budget, and is not a malformed answer
        truncated = set(double.stats.faults["truncated"])
        assert truncated
        plans = {r["slot_id"]: r for code in ("sw", "de") for r in run.read_table("plan", code, PLAN).iter_rows(named=True)}
        with sqlite3.connect(run.cache_path) as db:
            stored = {key: (slot, json.loads(request)["max_tokens"], status, error)
                      for key, slot, request, status, error in db.execute(
                          "SELECT key, slot_id, request, status, error FROM requests WHERE kind = 'example'")}
        checked = 0
        for key, (slot_id, max_tokens, status, _) in stored.items():
            if key in truncated:
                row = plans[slot_id]
                target = registry.get(row["target_language"]) if row["target_language"] else None
                first_budget = budget.completion_budget(row["family"], row, registry.get(row["language"]), target,
                                                        budget.table_for(local=False))
                assert status == "ok" and max_tokens == 2 * first_budget, slot_id
                checked += 1
        assert checked  # the fault seed truncates some example lines


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_config_plans_and_dry_runs(path, tmp_path):
    """Each shipped config: load, plan, dry-run generate (nothing sent), up to where the network or a GPU
    is needed. Configs over all 93 languages are planned for three of them, to keep the test small."""
    from workbench.eval.stage import PIPELINE_SYSTEMS, eval_sections

    requested = load_config(path)
    overrides = None
    if requested.run.languages == ["all"]:
        overrides = {"run": {"languages": ["de", "te", "am"], "quota": 12}}
    run, config = resolve_run_config(tmp_path / "run", path, overrides)
    registry = load_registry()
    run_plan(run, config, registry)
    dry = run_generate(run, config, registry, dry_run=True, batch=config.generate.batch)
    assert dry.stats["requests"] > 0 and dry.stats["est_completion_tokens"] > 0
    assert dry.stats["batch"] == config.generate.batch
    if path.stem == "openai_batch_93":
        assert config.generate.batch and dry.stats["price_known"] and dry.stats["est_cost_usd"] > 0
    if path.stem == "quickstart":  # the embedded server's 2,048-token context bounds every request
        assert max(high for _, high in dry.stats["max_tokens_by_family"].values()) < 2048
    systems = {section.system: section.model for section in eval_sections(run, config.eval, config.pipeline, config.train, PIPELINE_SYSTEMS)}
    if "eval" in config.pipeline.stages and config.eval.task != "passkey":  # BM25 has no passkey probe
        assert "bm25" in systems
    if path.stem == "quickstart":  # the base in its own format and under the trained contract, two seeds
        trained = str(run.stage_dir("train") / "model")
        assert systems["minilm"] == systems["minilm@ft-contract"] == "minilm" and systems["minilm-ft"] == trained
        assert systems["minilm-ft-seed14"] == str(run.stage_dir("train") / "seeds" / "14" / "model")
        contracts = {s.system: s.contract_from for s in eval_sections(run, config.eval, config.pipeline, config.train, PIPELINE_SYSTEMS)}
        assert contracts["minilm@ft-contract"] == trained and contracts["minilm"] is None
    if path.stem == "gpu_miracl":  # before/after: the base model next to the fine-tuned one
        assert config.train.model in systems.values()
        assert str(run.stage_dir("train") / "model") in systems.values()
