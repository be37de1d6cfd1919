from __future__ import annotations

import json

import polars as pl
import pytest

from workbench.errors import TableError, WorkbenchError
from workbench.run import Run
from workbench.status import run_status
from workbench.tables import PLAN


def plan_rows(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"slot_id": [f"sw-sts-{i:05d}" for i in range(n)], "language": ["sw"] * n,
         "family": ["sts"] * n, "seed": [1] * n},
    ).with_columns([pl.lit(None, dtype=pl.Utf8).alias(c) for c in PLAN if c not in
                    ("slot_id", "language", "family", "seed")])


def test_write_read_round_trip_and_schema_order(tmp_path):
    run = Run.create(tmp_path / "r")
    table = plan_rows(3).select(list(reversed(plan_rows(3).columns)))
    run.write_table("plan", "sw", table, PLAN)
    back = run.read_table("plan", "sw", PLAN)
    assert back.columns == list(PLAN) and back.height == 3
    assert not list((tmp_path / "r" / "plan").glob("*.tmp"))


def test_schema_violations_are_refused_on_write(tmp_path):
    run = Run.create(tmp_path / "r")
    with pytest.raises(TableError, match="missing column"):
        run.write_table("plan", "sw", plan_rows(2).drop("family"), PLAN)
    with pytest.raises(TableError, match="undeclared column"):
        run.write_table("plan", "sw", plan_rows(2).with_columns(pl.lit(1).alias("extra")), PLAN)
    assert not run.has_table("plan", "sw")


def test_corrupt_and_truncated_parquet_give_one_clear_error(tmp_path):
    run = Run.create(tmp_path / "r")
    path = run.write_table("plan", "sw", plan_rows(50), PLAN)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TableError) as info:
        run.read_table("plan", "sw", PLAN)
    line = str(info.value)
    assert str(path) in line and "corrupt or truncated" in line and "\n" not in line
    path.write_bytes(b"not parquet at all")
    with pytest.raises(TableError, match="cannot read Parquet"):
        run.read_table("plan", "sw", PLAN)


def test_a_failed_write_leaves_the_previous_table_intact(tmp_path):
    run = Run.create(tmp_path / "r")
    run.write_table("plan", "sw", plan_rows(4), PLAN)
    bad = plan_rows(5).with_columns(pl.lit("x").alias("seed"))  # cannot cast to Int64
    with pytest.raises(TableError, match="column types"):
        run.write_table("plan", "sw", bad, PLAN)
    assert run.read_table("plan", "sw", PLAN).height == 4


def test_incompatible_layout_version_is_refused(tmp_path):
    run = Run.create(tmp_path / "r")
    manifest = json.loads((run.root / "manifest.json").read_text())
    manifest["layout_version"] = 99
    (run.root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WorkbenchError, match="layout version 99"):
        Run.open(run.root)


def test_status_lists_every_stage_in_order(tmp_path):
    run = Run.create(tmp_path / "r")
    run.write_table("plan", "sw", plan_rows(7), PLAN)
    run.record_stage("plan", status="complete", config_hash="h", outputs={"plan/sw.parquet": 7})
    rows = run_status(run.root)
    assert [r["stage"] for r in rows][:3] == ["plan", "generate", "filter"]
    assert rows[0]["status"] == "complete" and rows[0]["rows"] == 7
    assert rows[1]["status"] == "not run"
    with pytest.raises(WorkbenchError, match="not a run directory"):
        run_status(tmp_path / "missing")


def test_outputs_are_ordinary_readable_files(tmp_path):
    run = Run.create(tmp_path / "r")
    path = run.write_table("plan", "sw", plan_rows(1), PLAN)
    assert path.stat().st_mode & 0o044 == 0o044  # group/other can read (mkstemp alone gives 0600)
    assert (run.root / "manifest.json").stat().st_mode & 0o044 == 0o044
