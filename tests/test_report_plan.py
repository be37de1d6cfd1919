"""`workbench plan --from-report`: next-round quotas from a real gap report (MTEB-published MiniLM
rows as the model, the published references, a TEST FIXTURE audit summary)."""

from __future__ import annotations

import os
import subprocess
import sys

import polars as pl
import pytest

from workbench.errors import WorkbenchError
from workbench.languages import load_registry
from workbench.report.next_plan import MIN_ACCEPTANCE, MIN_GAP, parse_budget, propose_quotas
from workbench.report.stage import build_report

import report_inputs as ri
from conftest import REPO


@pytest.fixture(scope="module")
def report_dir(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan-report")
    results = ri.mteb_results(shared_data, folder / "minilm.parquet", "sentence-transformers/all-MiniLM-L6-v2", "minilm")
    out = folder / "report"
    build_report(out, [results], audit=ri.audit_summary(folder / "audit.parquet"))
    return out


def test_parse_budget():
    assert parse_budget("5000").unit == "examples" and parse_budget("5000").amount == 5000
    for text in ("$20", "20usd", "20 USD", "$ 20.5"):
        assert parse_budget(text).unit == "usd"
    for text in ("lots", "0", "$0", "-3"):
        with pytest.raises(WorkbenchError, match="--budget"):
            parse_budget(text)


def test_example_budget_is_spent_exactly_and_weighted_to_gap_over_acceptance(report_dir):
    proposal = propose_quotas(report_dir, "1000", load_registry())
    planned = proposal.filter(pl.col("quota") > 0)
    assert planned["quota"].sum() == 1000
    data = pl.read_parquet(report_dir / "data.parquet")
    sw = proposal.filter(pl.col("language") == "sw").row(0, named=True)
    sw_data = data.filter(pl.col("language") == "sw").row(0, named=True)
    expected = max(sw_data["primary_gap_ndcg_at_10"], MIN_GAP) / max(sw_data["acceptance_rate"], MIN_ACCEPTANCE)
    assert sw["weight"] == pytest.approx(expected, rel=1e-3) and sw["basis"] == "measured"
    # quotas follow the weights: the largest weight gets the largest quota, within rounding
    total_weight = planned["weight"].sum()
    for rec in planned.iter_rows(named=True):
        assert abs(rec["quota"] - 1000 * rec["weight"] / total_weight) < 1.0
    en = proposal.filter(pl.col("language") == "en").row(0, named=True)
    assert en["gap"] < sw["gap"] and en["acceptance_rate"] > sw["acceptance_rate"] and en["quota"] < sw["quota"]
    am = proposal.filter(pl.col("language") == "am").row(0, named=True)  # audited, no MIRACL measurement
    assert am["basis"].startswith("no gap measured: median gap")
    yo = proposal.filter(pl.col("language") == "yo").row(0, named=True)
    assert yo["quota"] == 0 and "eval-only" in yo["basis"]


def test_dollar_budget_stays_within_budget(report_dir):
    proposal = propose_quotas(report_dir, "$2", load_registry()).filter(pl.col("quota") > 0)
    spent = proposal["est_cost_usd"].sum()
    assert 0 < spent <= 2.0
    # what floor() leaves is less than one example per language
    assert 2.0 - spent < proposal["cost_per_generated_usd"].sum()


def test_dollar_budget_without_costs_is_a_clear_error(shared_data, tmp_path):
    results = ri.mteb_results(shared_data, tmp_path / "m.parquet", "sentence-transformers/all-MiniLM-L6-v2", "minilm",
                              languages=["sw", "en"])
    audit = ri.audit_summary(tmp_path / "a.parquet")
    pl.read_parquet(audit).with_columns(pl.lit(None, dtype=pl.Float64).alias("cost_usd")).write_parquet(audit)
    build_report(tmp_path / "r", [results], audit=audit)
    with pytest.raises(WorkbenchError, match="a dollar budget needs costs"):
        propose_quotas(tmp_path / "r", "$5", load_registry())
    with pytest.raises(WorkbenchError, match="no report data.parquet"):
        propose_quotas(tmp_path, "100", load_registry())


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "workbench.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_cli_plan_from_report_writes_the_proposed_plan(report_dir, tmp_path):
    done = _cli("plan", tmp_path / "next", "--from-report", report_dir, "--budget", "300", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert "proposed quotas" in done.stdout
    tables = {p.stem: pl.read_parquet(p).height for p in (tmp_path / "next" / "plan").glob("*.parquet")}
    expected = propose_quotas(report_dir, "300", load_registry()).filter(pl.col("quota") > 0)
    assert tables == dict(zip(expected["language"], expected["quota"])) and sum(tables.values()) == 300
    assert "yo" not in tables
    for args, message in (
        (("--from-report", report_dir), "--from-report needs a total budget"),
        (("--budget", "300"), "--budget only applies with --from-report"),
        (("--from-report", report_dir, "--budget", "300", "--quota", "5"), "--quota cannot be combined"),
        (("--from-report", report_dir, "--budget", "many"), "budget 'many' is not understood"),
    ):
        bad = _cli("plan", tmp_path / "bad", *args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
