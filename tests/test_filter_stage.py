"""The filter stage over real-text generated tables: partition invariant, resume, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from workbench.config import RunConfig
from workbench.errors import TableError
from workbench.filter.stage import run_filter
from workbench.tables import FILTERED, GENERATED

from conftest import REPO
from filter_fixtures import make_run


@pytest.fixture(scope="module")
def filtered_run(tmp_path_factory, shared_data, registry):
    run = make_run(tmp_path_factory.mktemp("run"), shared_data, registry, {"sw": 120, "am": 60, "de": 90})
    result = run_filter(run, RunConfig(), registry)
    return run, result


def test_every_ok_row_lands_in_exactly_one_table(filtered_run):
    run, result = filtered_run
    for code in ("sw", "am", "de"):
        generated = run.read_table("generated", code, GENERATED)
        accepted = run.read_table("accepted", code, FILTERED)
        rejected = run.read_table("rejected", code, FILTERED)
        ok_ids = set(generated.filter(pl.col("status") == "ok")["slot_id"])
        accepted_ids, rejected_ids = set(accepted["slot_id"]), set(rejected["slot_id"])
        assert accepted_ids.isdisjoint(rejected_ids)
        assert accepted_ids | rejected_ids == ok_ids
        assert accepted.height + rejected.height == len(ok_ids)
        assert accepted.height > 0 and rejected.height > 0
        assert accepted["reasons"].list.len().max() == 0
        assert rejected["reasons"].list.len().min() >= 1
        assert result.stats["languages"][code]["accepted"] == accepted.height
        # LID votes travel with the rows; every vote names a member of the ensemble
        votes = accepted.select("lid_votes").explode("lid_votes").unnest("lid_votes").drop_nulls("member")
        assert set(votes["member"]) <= {"fasttext_lid176", "cld2", "langid"}
        assert accepted.filter(pl.col("lid_language").is_not_null()).height > 0


def test_duplicates_in_real_text_are_rejected_with_their_reason(filtered_run):
    run, _ = filtered_run
    rejected = run.read_table("rejected", "am", FILTERED)  # Tatoeba amh has 168 sentences: repeats
    reasons = rejected["reasons"].explode()
    assert reasons.str.starts_with("exact_duplicate").any()
    accepted = run.read_table("accepted", "am", FILTERED)
    queries = accepted.filter(pl.col("family") == "sts")["S1"].to_list()
    assert len(queries) == len(set(queries))  # no exact duplicate left among accepted


def test_rerun_is_skipped_when_current_and_redone_when_config_changes(filtered_run, registry):
    run, _ = filtered_run
    path = run.table_path("accepted", "sw")
    before = path.stat().st_mtime_ns
    again = run_filter(run, RunConfig(), registry)
    assert again.current and path.stat().st_mtime_ns == before
    strict = RunConfig.model_validate({"filter": {"allow_confusable": False, "near_dedup": False}})
    redone = run_filter(run, strict, registry)
    assert not redone.current and path.stat().st_mtime_ns != before


def test_parallel_workers_give_the_same_verdicts(tmp_path, shared_data, registry):
    run = make_run(tmp_path / "r", shared_data, registry, {"sw": 150})
    parallel = RunConfig.model_validate({"filter": {"workers": 2, "chunk_size": 40}})
    run_filter(run, parallel, registry)
    first = run.read_table("rejected", "sw", FILTERED).select("slot_id", "reasons")
    serial = RunConfig.model_validate({"filter": {"workers": 1}})
    run_filter(run, serial, registry)
    second = run.read_table("rejected", "sw", FILTERED).select("slot_id", "reasons")
    assert first.equals(second)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_input_is_one_clear_error_and_no_partial_output(tmp_path, shared_data, registry):
    run = make_run(tmp_path / "r", shared_data, registry, {"sw": 30, "de": 30})
    _truncate(run.table_path("generated", "sw"))
    with pytest.raises(TableError, match=r"generated/sw\.parquet: cannot read Parquet"):
        run_filter(run, RunConfig(), registry)
    assert not (run.root / "accepted").exists() and not (run.root / "rejected").exists()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "filter", str(run.root)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "sw.parquet" in lines[0] and "corrupt or truncated" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run.root / "accepted").exists()


def test_a_run_without_generated_tables_is_one_clear_error(tmp_path, registry):
    from workbench.run import Run

    with pytest.raises(TableError, match="no generated tables to filter"):
        run_filter(Run.create(tmp_path / "empty"), RunConfig(), registry)


def test_wrong_schema_input_is_rejected(tmp_path, shared_data, registry):
    run = make_run(tmp_path / "r", shared_data, registry, {"de": 10})
    path = run.table_path("generated", "de")
    pl.read_parquet(path).drop("family").write_parquet(path)
    with pytest.raises(TableError, match="missing column.*family"):
        run_filter(run, RunConfig(), registry)
    assert not (run.root / "accepted").exists()


def test_cli_filter_runs_and_prints_counts(tmp_path, shared_data, registry):
    run = make_run(tmp_path / "r", shared_data, registry, {"de": 30})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "filter", str(run.root), "--strict-language"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    accepted = run.read_table("accepted", "de", FILTERED).height
    rejected = run.read_table("rejected", "de", FILTERED).height
    assert accepted + rejected == 30
    assert f"{accepted}" in proc.stdout and "de" in proc.stdout
    assert "allow_confusable = false" in run.config_path.read_text()
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "audit", str(run.root)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (run.root / "audit" / "index.html").is_file() and "audit written" in proc.stdout
