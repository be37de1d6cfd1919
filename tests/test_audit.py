"""The audit over a filtered real-text run: counts add up, JSON/Parquet agree, HTML renders."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from workbench.audit import distinct_n, run_audit
from workbench.config import RunConfig
from workbench.errors import TableError
from workbench.filter.stage import run_filter
from workbench.languages import load_registry
from workbench.tables import AUDIT_SUMMARY, FILTERED, GENERATED

from filter_fixtures import make_run

CHROMIUM = Path("/usr/bin/chromium")
LANGS = {"sw": 60, "am": 40, "ms": 40, "ja": 40}


@pytest.fixture(scope="module")
def audited(tmp_path_factory, shared_data):
    registry = load_registry()
    run = make_run(tmp_path_factory.mktemp("run"), shared_data, registry, LANGS, failed=3)
    config = RunConfig.model_validate({"filter": {"allow_confusable": False}})
    run_filter(run, config, registry)
    run_audit(run, config, registry)
    return run, registry


def test_counts_add_up_per_language(audited):
    run, _ = audited
    summary = run.read_table("audit", "summary", AUDIT_SUMMARY)
    assert sorted(summary["language"]) == sorted(LANGS)
    for row in summary.iter_rows(named=True):
        code = row["language"]
        assert row["generated"] == LANGS[code] and row["failed"] == 3
        assert row["accepted"] + row["rejected"] == row["generated"]
        assert row["accepted"] == run.read_table("accepted", code, FILTERED).height
        assert row["acceptance_rate"] == pytest.approx(row["accepted"] / row["generated"], abs=1e-4)
        generated = run.read_table("generated", code, GENERATED)
        assert row["prompt_tokens"] == generated["prompt_tokens"].sum()
        assert row["distinct_tasks"] == generated.filter(pl.col("status") == "ok")["task"].n_unique()
        rejected = run.read_table("rejected", code, FILTERED)
        for item in filter(None, row["top_reject_reasons"].split("; ")):
            reason, count = item.rsplit(":", 1)
            rows_with = rejected.filter(pl.col("reasons").list.eval(pl.element().str.starts_with(reason + ":")
                                                                  | (pl.element() == reason)).list.any())
            assert rows_with.height == int(count)


def test_malay_confusion_with_indonesian_is_reported(audited):
    run, _ = audited
    summary = run.read_table("audit", "summary", AUDIT_SUMMARY)
    ms = summary.filter(pl.col("language") == "ms").row(0, named=True)
    assert "id:" in ms["top_lid_confusions"]
    # ms.toml lists id in accept_also: those rows are accepted, and counted apart
    report = json.loads((run.root / "audit" / "audit.json").read_text())
    ms_json = next(lang for lang in report["languages"] if lang["language"] == "ms")
    accepted = run.read_table("accepted", "ms", FILTERED)
    assert ms_json["accepted_as_neighbour"] == ms_json["accepted_as"]["id"] > 0
    assert ms_json["accepted_as_neighbour"] == accepted.filter(pl.col("lid_accepted_as") == "id").height
    assert ms_json["accepted_plain"] == accepted.height - ms_json["accepted_as_neighbour"]
    detected = {d["detected"]: d for d in ms_json["detected"]}
    assert sum(d["rows"] for d in detected.values()) == ms_json["generated"]
    assert detected["id"]["rows"] >= detected["id"]["accepted"] > 0


def test_rejects_for_review_hold_every_rejected_row(audited):
    run, _ = audited
    lines = (run.root / "audit" / "rejects_for_review.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    expected = {row["slot_id"] for code in LANGS for row in run.read_table("rejected", code, FILTERED).to_dicts()}
    assert {r["slot_id"] for r in records} == expected and len(records) == len(expected)
    first = records[0]
    rejected = run.read_table("rejected", first["language"], FILTERED).filter(pl.col("slot_id") == first["slot_id"])
    row = rejected.row(0, named=True)
    assert first["reasons"] == row["reasons"] and first["human_verdict"] is None
    assert all(first["fields"][name] == row[name] for name in first["fields"])  # full text, not cut


def test_audit_json_has_tiers_lengths_and_confusion(audited):
    run, _ = audited
    report = json.loads((run.root / "audit" / "audit.json").read_text())
    assert report["totals"]["generated"] == sum(LANGS.values())
    assert report["totals"]["accepted"] + report["totals"]["rejected"] == sum(LANGS.values())
    assert set(report["tiers"]) == {"high", "mid", "low"}
    ja = next(item for item in report["languages"] if item["language"] == "ja")
    assert ja["lengths"]["sts.S1"]["n"] > 0 and ja["lengths"]["sts.S1"]["median"] > 3  # characters
    assert report["lid_confusion"]["ms"].get("id", 0) > 0


def test_stale_filter_output_is_refused(audited, tmp_path):
    run, registry = audited
    copy = tmp_path / "copy"
    shutil.copytree(run.root, copy)
    from workbench.run import Run

    stale = Run.open(copy)
    accepted = stale.read_table("accepted", "sw", FILTERED)
    stale.write_table("accepted", "sw", accepted.head(accepted.height - 1), FILTERED)
    with pytest.raises(TableError, match=r"accepted/sw.parquet: accepted .* != generated ok rows"):
        run_audit(stale, RunConfig(), registry)


def test_distinct_n():
    assert distinct_n(["a b a b", "a b"], 2, unspaced=False) == pytest.approx(2 / 4)
    assert distinct_n(["日本日本"], 1, unspaced=True) == 0.5
    assert distinct_n([""], 2, unspaced=False) is None


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (CI installs Debian chromium)")
def test_html_renders_in_headless_chromium(audited, tmp_path):
    run, _ = audited
    page = run.root / "audit" / "index.html"
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    rows = re.findall(r'<tr class="language-row" data-language="([a-z]+)"', dom)
    assert sorted(rows) == sorted(LANGS)
    for plot in ("plot-acceptance", "plot-reasons", "plot-confusion"):
        match = re.search(rf'id="{plot}"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', dom)
        assert match and len(match.group(1)) > 2000, plot
    shot = tmp_path / "shot.png"
    subprocess.run(command[:-2] + [f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
