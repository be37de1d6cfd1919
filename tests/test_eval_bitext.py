"""Tatoeba bitext mining through mteb from the LASER files shipped in examples/data/tatoeba.

The MiniLM run is checked against the published MTEB result of the same model on the same pair
(embeddings-benchmark/results, sentence-transformers__all-MiniLM-L6-v2 Tatoeba.json): the same
files through mteb's own evaluator must give the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from workbench.config import RunConfig
from workbench.errors import UnknownLanguageError, WorkbenchError
from workbench.eval.targets import build_target
from workbench.eval.bitext import load_laser_pair
from workbench.eval.stage import run_eval
from workbench.languages import load_registry
from workbench.run import Run
from workbench.tables import EVAL_PER_QUERY, EVAL_RESULTS

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_TATOEBA = REPO / "examples" / "data" / "tatoeba"


def _config(**eval_section) -> RunConfig:
    return RunConfig.model_validate({"run": {"name": "t"}, "eval": {"task": "tatoeba", **eval_section}})


@pytest.mark.slow
def test_minilm_on_amharic_reproduces_the_published_mteb_result(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    run = Run.create(tmp_path / "run")
    run_eval(run, _config(model="minilm", languages=["am"], data_dir=str(EXAMPLE_TATOEBA)), load_registry())
    table = run.read_table("eval", "results", EVAL_RESULTS)
    values = dict(zip(table["metric"], table["value"], strict=True))
    assert set(table["task"]) == {"Tatoeba"} and set(table["dataset"]) == {"tatoeba-amh-eng"}
    assert set(table["language"]) == {"am"} and set(table["n_queries"]) == {168}
    # published: accuracy 0.011904761904761904, f1 0.0024965325936199723 (mteb 1.12.75)
    assert values["accuracy"] == pytest.approx(1.190, abs=1e-3)
    assert values["f1"] == pytest.approx(0.250, abs=1e-3)
    per_pair = run.read_table("eval", "per_query", EVAL_PER_QUERY)
    assert set(per_pair["metric"]) == {"accuracy"} and per_pair.height == 168
    assert set(per_pair["score"]) == {0.0, 100.0}
    assert per_pair["score"].mean() == pytest.approx(values["accuracy"], abs=1e-3)
    sources = json.loads((run.root / "eval" / "data_sources.json").read_text())["tatoeba-amh-eng"]
    digest = hashlib.sha256((EXAMPLE_TATOEBA / "tatoeba.amh-eng.amh").read_bytes()).hexdigest()
    assert sources["origin"] == "local" and sources["files"]["tatoeba.amh-eng.amh"] == digest
    assert sources["pairs"] == sources["published_pairs"] == 168


def test_targets_label_complete_sets_and_subsets(tmp_path: Path) -> None:
    registry = load_registry()
    target = build_target(_config(data_dir=str(EXAMPLE_TATOEBA)).eval, registry)
    assert target.task_name == "Tatoeba" and target.kind == "bitext-mining"
    assert target.datasets == {f"{c}-eng": f"tatoeba-{c}-eng" for c in ("amh", "deu", "jpn", "swh")}
    assert target.languages == {"amh-eng": "am", "deu-eng": "de", "jpn-eng": "ja", "swh-eng": "sw"}
    assert {s: c["pairs"] for s, c in target.counts.items()} == {"amh-eng": 168, "deu-eng": 1000, "jpn-eng": 1000, "swh-eng": 390}
    # fewer pairs than published: a subset, labelled so (mining among fewer candidates is easier)
    cut = tmp_path / "cut"
    cut.mkdir()
    for suffix in ("amh", "eng"):
        lines = (EXAMPLE_TATOEBA / f"tatoeba.amh-eng.{suffix}").read_text(encoding="utf-8").splitlines()[:50]
        (cut / f"tatoeba.amh-eng.{suffix}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = build_target(_config(data_dir=str(cut), languages=["am"]).eval, registry)
    assert target.task_name == "TatoebaSubset" and target.datasets == {"amh-eng": "tatoeba-amh-eng-subset50"}


def test_bad_tatoeba_input_is_one_clear_error(tmp_path: Path) -> None:
    registry = load_registry()
    build = lambda **kw: build_target(_config(**kw).eval, registry)  # noqa: E731
    with pytest.raises(UnknownLanguageError, match="English is the target side"):
        build(data_dir=str(EXAMPLE_TATOEBA), languages=["en"])
    with pytest.raises(UnknownLanguageError, match="'so' has no Tatoeba test set"):
        build(data_dir=str(EXAMPLE_TATOEBA), languages=["so"])
    with pytest.raises(UnknownLanguageError, match=r"no Tatoeba data for 'fr' \(fra\).*has am de ja sw"):
        build(data_dir=str(EXAMPLE_TATOEBA), languages=["fr"])
    with pytest.raises(WorkbenchError, match="no tatoeba"):
        build(data_dir=str(tmp_path))
    broken = tmp_path / "broken"
    shutil.copytree(EXAMPLE_TATOEBA, broken)
    (broken / "tatoeba.amh-eng.eng").write_text("one line\n", encoding="utf-8")
    with pytest.raises(WorkbenchError, match="168 lines but the English side has 1") as err:
        load_laser_pair(broken, "amh")
    assert "tatoeba.amh-eng.amh" in str(err.value)
    # BM25 has no sentence vectors: alone it cannot run bitext mining, and nothing is written
    run = Run.create(tmp_path / "run")
    with pytest.raises(WorkbenchError, match="no system can run Tatoeba"):
        run_eval(run, _config(model="bm25", data_dir=str(EXAMPLE_TATOEBA), languages=["am"]), registry)
    assert not run.has_table("eval", "results")


def test_quickstart_evaluates_miracl_subset_and_tatoeba() -> None:
    from workbench.config import load_config

    config = load_config(REPO / "examples" / "quickstart.toml")
    tasks = {t.task: t for t in config.pipeline.eval_also}
    assert (REPO / tasks["miracl"].data_dir / "corpus" / "yo" / "corpus.jsonl.gz").is_file()
    assert (REPO / tasks["tatoeba"].data_dir / "tatoeba.swh-eng.swh").is_file()
    # every shipped file is listed with its checksum
    for folder in ("tatoeba", "miracl-yo"):
        text = (REPO / "examples" / "data" / folder / ("SHA256SUMS" if folder == "tatoeba" else "PROVENANCE.md")).read_text()
        for path in (REPO / "examples" / "data" / folder).rglob("*"):
            if path.is_file() and path.suffix not in (".md", ".py") and path.name != "SHA256SUMS":
                assert hashlib.sha256(path.read_bytes()).hexdigest() in text, path


def test_hub_tatoeba_offline_is_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "eval", "--run", str(tmp_path / "r"), "--model", "minilm", "--task", "tatoeba", "-l", "sw"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot load mteb/tatoeba-bitext-mining from the Hugging Face hub" in proc.stderr
    assert "--data-dir" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_pipeline_eval_also_runs_every_dataset_and_bm25_skips_bitext(tmp_path: Path) -> None:
    from workbench.config import parse_config
    from workbench.runner import run_pipeline

    tiny = tmp_path / "tatoeba"
    tiny.mkdir()
    for suffix in ("amh", "eng"):
        lines = (EXAMPLE_TATOEBA / f"tatoeba.amh-eng.{suffix}").read_text(encoding="utf-8").splitlines()[:20]
        (tiny / f"tatoeba.amh-eng.{suffix}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = parse_config(
        {
            "run": {"name": "t", "languages": ["am"]},
            "train": {"model": "minilm"},
            "eval": {"task": "tatoeba", "data_dir": str(tiny)},
            "pipeline": {"stages": ["eval"], "eval_systems": ["bm25", "base"],
                         "eval_also": [{"task": "xquad", "data_dir": str(REPO / "examples" / "data" / "xquad"), "languages": ["th"]}]},
        },
        where="test",
    )
    run = Run.create(tmp_path / "run")
    outcomes = run_pipeline(run, config, load_registry())
    assert [o.state for o in outcomes if o.stage == "eval"] == ["ran"]
    results = run.read_table("eval", "results", EVAL_RESULTS)
    systems = {task: set(part["system"]) for (task,), part in results.group_by(["task"])}
    assert systems == {"TatoebaSubset": {"minilm"}, "XQuADRetrieval": {"bm25", "minilm"}}
    per_query = run.read_table("eval", "per_query", EVAL_PER_QUERY)
    groups = per_query.select("system", "task", "metric").unique()
    assert groups.filter(pl.col("task") == "TatoebaSubset")["metric"].to_list() == ["accuracy"]
    assert groups.filter(pl.col("task") == "XQuADRetrieval").height == 2 * 5
