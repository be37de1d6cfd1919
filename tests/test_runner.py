"""The runner owns the skip decision and the manifest: one rule for the pipeline and every single-stage call."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from workbench.config import parse_config
from workbench.errors import TableError, UnknownLanguageError
from workbench.filter.stage import run_filter
from workbench.languages import languages_dir, load_registry
from workbench.pipeline import run_pipeline
from workbench.plan import run_plan
from workbench.run import Run
from workbench.runner import stage_digest
from workbench.stages import BY_NAME
from workbench.tables import PLAN


def _config(**run_section):
    return parse_config({"run": {"name": "r", "languages": ["sw"], "quota": 4, "seed": 1, **run_section}}, where="test")


def test_a_current_stage_is_skipped_and_anything_it_depends_on_runs_it_again(tmp_path):
    registry = load_registry()
    run = Run.create(tmp_path / "run")
    config = _config()
    first = run_plan(run, config, registry)
    entry = run.stage_entry("plan")
    assert not first.current and entry["status"] == "complete"
    assert entry["config_hash"] == stage_digest(run, config, registry, BY_NAME["plan"])
    assert entry["outputs"]["plan/sw.parquet"]["rows"] == 4 and entry["stats"]["seconds"] >= 0
    table = run.table_path("plan", "sw")
    before = table.stat().st_mtime_ns
    assert run_plan(run, config, registry).current and table.stat().st_mtime_ns == before

    assert not run_plan(run, _config(seed=2), registry).current  # a declared section changed
    assert not run_plan(run, config, registry).current  # and back
    run.write_table("plan", "sw", run.read_table("plan", "sw", PLAN).head(1), PLAN)  # edited behind the manifest
    assert not run_plan(run, config, registry).current
    assert run.read_table("plan", "sw", PLAN).height == 4
    table.unlink()
    assert not run_plan(run, config, registry).current and table.is_file()


def test_the_digest_covers_input_files_on_disk_and_the_language_files_only_where_declared(tmp_path):
    registry = load_registry()
    config = _config()
    run = Run.create(tmp_path / "run")
    run_plan(run, config, registry)
    filter_digest = stage_digest(run, config, registry, BY_NAME["filter"])
    generate_digest = stage_digest(run, config, registry, BY_NAME["generate"])
    table = run.table_path("plan", "sw")
    run.write_table("plan", "sw", run.read_table("plan", "sw", PLAN).head(2), PLAN)
    assert stage_digest(run, config, registry, BY_NAME["generate"]) != generate_digest  # the input changed on disk
    assert stage_digest(run, config, registry, BY_NAME["filter"]) == filter_digest  # filter does not read the plan
    assert table.is_file()

    edited = tmp_path / "languages"
    shutil.copytree(languages_dir(), edited)
    sw = edited / "sw.toml"
    sw.write_text("lid_threshold = 0.77\n" + sw.read_text())  # top-level keys come before the tables
    other = load_registry(edited)
    assert other.get("sw").lid_threshold == 0.77
    assert stage_digest(run, config, other, BY_NAME["filter"]) != filter_digest  # LID policy lives in the language files
    assert stage_digest(run, config, other, BY_NAME["train"]) == stage_digest(run, config, registry, BY_NAME["train"])


def test_a_stage_stopped_by_an_error_is_recorded_partial_with_its_line(tmp_path):
    registry = load_registry()
    run = Run.create(tmp_path / "run")
    run_plan(run, _config(), registry)
    with pytest.raises(TableError, match="no generated tables"):
        run_filter(run, _config(), registry)
    entry = run.stage_entry("filter")
    assert entry["status"] == "partial" and "no generated tables" in entry["stats"]["stopped_by"]
    assert entry["outputs"] == {}
    assert run.stage_entry("plan")["status"] == "complete"  # earlier records untouched
    assert pl.read_parquet(run.table_path("plan", "sw")).height == 4


def test_files_outside_the_run_join_the_digest_of_the_stages_that_read_them(tmp_path):
    registry = load_registry()
    data = tmp_path / "beir"
    shutil.copytree(Path(__file__).resolve().parent.parent / "examples" / "data" / "xquad" / "en", data)
    extra = tmp_path / "extra.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(extra)
    config = parse_config({"eval": {"task": "beir", "data_dir": str(data)}, "report": {"results": [str(extra)]}},
                          where="test")
    run = Run.create(tmp_path / "run")
    eval_digest = stage_digest(run, config, registry, BY_NAME["eval"])
    report_digest = stage_digest(run, config, registry, BY_NAME["report"])
    corpus = next(p for p in data.rglob("*") if p.is_file())
    corpus.write_text(corpus.read_text() + "\n")  # the local eval data changed in place
    assert stage_digest(run, config, registry, BY_NAME["eval"]) != eval_digest
    assert stage_digest(run, config, registry, BY_NAME["report"]) == report_digest
    pl.DataFrame({"x": [2]}).write_parquet(extra)  # an extra results table changed
    assert stage_digest(run, config, registry, BY_NAME["report"]) != report_digest


def test_the_pipeline_names_a_current_stage_skipped_and_never_running(tmp_path):
    registry = load_registry()
    run = Run.create(tmp_path / "run")
    config = _config().model_copy(update={"pipeline": parse_config({"pipeline": {"stages": ["plan"]}},
                                                                   where="test").pipeline})
    lines: list[tuple[str, str]] = []
    run_pipeline(run, config, registry, on_stage=lambda stage, state: lines.append((stage, state)))
    assert [state.split(" in ")[0] for stage, state in lines if stage == "plan"] == ["running", "done"]
    lines.clear()
    run_pipeline(run, config, registry, on_stage=lambda stage, state: lines.append((stage, state)))
    assert lines == [("plan", "skipped (current)")]


def test_the_model_folders_train_and_filter_read_from_outside_the_run_join_their_digests(tmp_path):
    registry = load_registry()
    model, ds_config, lid = tmp_path / "base-model", tmp_path / "ds.json", tmp_path / "glotlid.bin"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    ds_config.write_text("{}")
    lid.write_bytes(b"lid model")
    config = parse_config({"train": {"model": str(model), "deepspeed_config": str(ds_config)},
                           "filter": {"extra_fasttext_path": str(lid)}}, where="test")
    run = Run.create(tmp_path / "run")
    train_digest = stage_digest(run, config, registry, BY_NAME["train"])
    filter_digest = stage_digest(run, config, registry, BY_NAME["filter"])
    (model / "model.safetensors").write_bytes(b"other weights")  # another checkpoint in the same folder
    assert stage_digest(run, config, registry, BY_NAME["train"]) != train_digest
    train_digest = stage_digest(run, config, registry, BY_NAME["train"])
    ds_config.write_text('{"gradient_clipping": 1.0}')
    assert stage_digest(run, config, registry, BY_NAME["train"]) != train_digest
    assert stage_digest(run, config, registry, BY_NAME["filter"]) == filter_digest
    lid.write_bytes(b"a newer lid model")
    assert stage_digest(run, config, registry, BY_NAME["filter"]) != filter_digest


def test_a_stage_stopped_after_an_earlier_run_keeps_that_run_s_outputs_and_stats(tmp_path):
    registry = load_registry()
    run = Run.create(tmp_path / "run")
    run_plan(run, _config(), registry)
    before = run.stage_entry("plan")
    with pytest.raises(UnknownLanguageError):
        run_plan(run, _config(quotas={"xx": 3}), registry)  # stopped by a bad quota, nothing rewritten
    entry = run.stage_entry("plan")
    assert entry["status"] == "partial" and "unknown language code 'xx'" in entry["stats"]["stopped_by"]
    assert entry["outputs"] == before["outputs"]  # same files, same rows and sha256
    assert entry["stats"]["left_out"] == before["stats"]["left_out"]
    assert run_plan(run, _config(), registry).current is False  # partial is never current: it runs again

