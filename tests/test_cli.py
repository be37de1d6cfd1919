from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from workbench.cli import app

from conftest import REPO

runner = CliRunner()


def workbench_exe() -> str:
    exe = Path(sys.executable).parent / "workbench"
    return str(exe) if exe.exists() else shutil.which("workbench")


def test_languages_table_lists_all_94_entries():
    result = runner.invoke(app, ["languages"])
    assert result.exit_code == 0, result.output
    assert "94 languages" in result.output
    rows = json.loads(runner.invoke(app, ["languages", "--format", "json"]).output)
    assert len(rows) == 94 and {"code": "sw", "native_name": "Kiswahili"}.items() <= next(
        r for r in rows if r["code"] == "sw").items()


def test_languages_filters_and_json():
    result = runner.invoke(app, ["languages", "--tier", "low", "--format", "json"])
    rows = json.loads(result.output)
    assert rows and {r["tier"] for r in rows} == {"low"}
    arab = json.loads(runner.invoke(app, ["languages", "--script", "Arab", "--format", "json"]).output)
    assert {r["code"] for r in arab} == {"ar", "fa", "ps", "sd", "ug", "ur"}
    miracl = runner.invoke(app, ["languages", "--miracl", "--format", "csv"]).output.splitlines()
    assert miracl[0].startswith("code,") and len(miracl) == 19


def test_plan_through_typer_runner(tmp_path):
    result = runner.invoke(app, ["plan", str(tmp_path / "r"), "-l", "sw,ja", "--quota", "30", "--seed", "2"])
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "r" / "plan" / "sw.parquet")
    assert table.height == 30
    assert 'quota = 30' in (tmp_path / "r" / "run.toml").read_text()


def test_installed_console_script_plans_and_reports_errors_in_one_line(tmp_path):
    exe = workbench_exe()
    env = {**os.environ, "COLUMNS": "200"}
    ok = subprocess.run([exe, "plan", str(tmp_path / "r"), "--config", str(REPO / "examples" / "quickstart.toml")],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert sorted(p.stem for p in (tmp_path / "r" / "plan").glob("*.parquet")) == ["am", "de", "en", "ja", "sw"]
    bad = subprocess.run([exe, "plan", str(tmp_path / "r2"), "-l", "xx"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 2
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown language code 'xx'" in lines[0]
    assert "Traceback" not in bad.stderr


def test_malformed_config_is_one_line(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[run]\nlanguages = ["sw"]\nquota = 0\n')
    result = subprocess.run([workbench_exe(), "plan", str(tmp_path / "r"), "--config", str(config)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"{config}: field 'run.quota'" in result.stderr and "Traceback" not in result.stderr
