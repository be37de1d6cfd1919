from __future__ import annotations

import polars as pl
import pytest

from workbench.config import RunConfig, parse_config
from workbench.errors import ConfigError, UnknownLanguageError
from workbench.families import FAMILIES, FAMILY_NAMES, PAPER_TOTAL
from workbench.languages import load_registry
from workbench.plan import allocate, plan_language, read_plan, run_plan
from workbench.run import Run


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def config(**run) -> RunConfig:
    return RunConfig.model_validate({"run": run})


def test_proportions_match_paper_mix_within_rounding(registry):
    table = plan_language(registry.get("sw"), 1000, list(FAMILY_NAMES), 13, registry)
    counts = dict(table.group_by("family").len().iter_rows())
    assert sum(counts.values()) == 1000
    for name, family in FAMILIES.items():
        assert abs(counts[name] - 1000 * family.paper_count / PAPER_TOTAL) < 1, name
    assert counts == {"short_long": 329, "long_short": 241, "short_short": 26,
                      "long_long": 33, "sts": 195, "bitext": 176}


def test_allocate_always_sums_to_total():
    for total in (1, 2, 7, 12, 99, 1001):
        shares = {n: FAMILIES[n].paper_count / PAPER_TOTAL for n in FAMILY_NAMES}
        assert sum(allocate(total, shares).values()) == total


def test_same_seed_same_plan_different_seed_different(registry):
    sw = registry.get("sw")
    first = plan_language(sw, 200, list(FAMILY_NAMES), 13, registry)
    again = plan_language(sw, 200, list(FAMILY_NAMES), 13, registry)
    other = plan_language(sw, 200, list(FAMILY_NAMES), 14, registry)
    assert first.equals(again)
    assert not first.equals(other)
    assert first["slot_id"].is_unique().all()


def test_placeholders_come_from_the_family_vocabularies(registry):
    table = plan_language(registry.get("ja"), 500, list(FAMILY_NAMES), 3, registry)
    for name, family in FAMILIES.items():
        rows = table.filter(pl.col("family") == name)
        for placeholder, choices in family.placeholders.items():
            assert set(rows[placeholder].to_list()) <= set(choices)
            assert rows[placeholder].null_count() == 0
    retrieval = table.filter(pl.col("family") == "short_long")
    assert retrieval["high_score"].null_count() == retrieval.height
    bitext = table.filter(pl.col("family") == "bitext")
    assert set(bitext["target_language"].to_list()) == {"en"}


def test_english_bitext_pairs_with_other_high_resource_languages(registry):
    table = plan_language(registry.get("en"), 300, ["bitext"], 3, registry)
    partners = set(table["target_language"].to_list())
    assert "en" not in partners and len(partners) > 3
    assert all(registry.get(code).tier == "high" for code in partners)


def test_run_plan_writes_tables_and_is_idempotent(tmp_path, registry):
    run = Run.create(tmp_path / "run")
    cfg = config(languages=["sw", "am", "low"], quota=20, seed=5)
    first = run_plan(run, cfg, registry)
    low = {lang.code for lang in registry.select(["low"])}
    assert set(run.table_languages("plan")) == low | {"sw"}
    assert all(rows == 20 for rows in first.outputs.values())
    mtimes = {p: p.stat().st_mtime_ns for p in (run.root / "plan").glob("*.parquet")}
    second = run_plan(run, cfg, registry)
    assert second.current and second.outputs == first.outputs
    assert mtimes == {p: p.stat().st_mtime_ns for p in (run.root / "plan").glob("*.parquet")}
    entry = run.stage_entry("plan")
    assert entry["status"] == "complete"
    assert all(len(info["sha256"]) == 64 for info in entry["outputs"].values())


def test_changing_the_config_replans_and_drops_deselected_languages(tmp_path, registry):
    run = Run.create(tmp_path / "run")
    run_plan(run, config(languages=["sw", "de"], quota=10), registry)
    result = run_plan(run, config(languages=["sw"], quota=15, quotas={"sw": 30}), registry)
    assert not result.current
    assert run.table_languages("plan") == ["sw"]
    assert read_plan(run)["sw"].height == 30


def test_eval_only_language_needs_an_explicit_quota(tmp_path, registry):
    run = Run.create(tmp_path / "run")
    result = run_plan(run, config(languages=["miracl"], quota=6), registry)
    assert "yo" in result.stats["left_out"] and "yo" not in run.table_languages("plan")
    run_plan(run, config(languages=["yo"], quotas={"yo": 4}), registry)
    assert read_plan(run)["yo"].height == 4


def test_unknown_language_and_bad_quota_fail_clearly(tmp_path, registry):
    run = Run.create(tmp_path / "run")
    with pytest.raises(UnknownLanguageError, match="unknown language code 'xx'"):
        run_plan(run, config(languages=["xx"]), registry)
    with pytest.raises(ConfigError, match=r"x.toml: field 'run.quotas': quota for 'sw' is 0"):
        parse_config({"run": {"quotas": {"sw": 0}}}, where="x.toml")
    with pytest.raises(ConfigError, match=r"field 'run.quota'"):
        parse_config({"run": {"quota": -3}}, where="x.toml")
    with pytest.raises(ConfigError, match=r"field 'run.famlies': not a known setting"):
        parse_config({"run": {"famlies": ["sts"]}}, where="x.toml")
