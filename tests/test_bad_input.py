"""Bad input through the real CLI: one line on stderr, exit 2, no traceback, nothing produced is lost.

A small complete run (plan → generate → filter → audit against the OpenAI test double, which
checks its API key) is built once; each case works on a fresh copy of it and checks afterwards
that every table the run already had is byte-for-byte unchanged. The cases are the table in
docs/bad_input.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from workbench.testing.openai_double import OpenAIDouble

from conftest import REPO

KEY = "right-key"


def _config(path: Path, base_url: str, *, languages: str = '["de", "sw"]', quota: str = "6",
            model: str = "double", extra: str = "") -> Path:
    path.write_text(f"""[run]
name = "bad-input"
seed = 3
languages = {languages}
quota = {quota}

[generate]
base_url = "{base_url}"
model = "{model}"
structured_output = "json_schema"
timeout_s = 3.0
max_retries = 1
backoff_base_s = 0.01
backoff_max_s = 0.02
{extra}
[pipeline]
stages = ["plan", "generate", "filter", "audit"]
""")
    return path


def _cli(*args: object, env: dict[str, str] | None = None, prefix: list[str] | None = None):
    command = [*(prefix or []), sys.executable, "-m", "workbench.cli", *map(str, args)]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": KEY, **(env or {})}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, cwd=REPO)


def _one_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, f"exit {done.returncode}; stderr: {done.stderr[-1500:]}"
    assert "Traceback" not in done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    print(f"\n[bad-input] {lines[0]}")
    return lines[0]


def _hashes(run_dir: Path) -> dict[str, str]:
    """Content hash of every table and stage file of a run (run.toml/manifest excluded)."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".json", ".html", ".sqlite") and p.name != "manifest.json"}


@pytest.fixture(scope="module")
def double(shared_data):
    with OpenAIDouble(shared_data, api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def base_run(double, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-input")
    config = _config(root / "ok.toml", double.base_url)
    done = _cli("run", config, "--run-dir", root / "run")
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "run"


@pytest.fixture
def run_copy(base_run, tmp_path) -> tuple[Path, dict[str, str]]:
    target = tmp_path / "run"
    shutil.copytree(base_run, target)
    return target, _hashes(target)


def test_unknown_language_code(run_copy, double, tmp_path):
    run_dir, before = run_copy
    config = _config(tmp_path / "c.toml", double.base_url, languages='["de", "xx"]')
    _one_line(_cli("run", config, "--run-dir", run_dir), "c.toml: field 'run.languages'", "'xx'")
    assert _hashes(run_dir) == before


@pytest.mark.parametrize("quota", ["0", "-3"])
def test_quota_zero_or_negative(quota, run_copy, double, tmp_path):
    run_dir, before = run_copy
    config = _config(tmp_path / "c.toml", double.base_url, quota=quota)
    _one_line(_cli("run", config, "--run-dir", run_dir), "c.toml", "run.quota", "greater than or equal to 1")
    assert _hashes(run_dir) == before


def test_malformed_config(run_copy, tmp_path):
    run_dir, before = run_copy
    config = tmp_path / "c.toml"
    config.write_text('[run\nname = "x"\n')
    _one_line(_cli("run", config, "--run-dir", run_dir), "c.toml", "not valid TOML", "line 1")
    assert _hashes(run_dir) == before


def test_unreachable_endpoint(run_copy, tmp_path):
    run_dir, before = run_copy
    config = _config(tmp_path / "c.toml", "http://127.0.0.1:9/v1")  # port 9 (discard): nothing listens
    _one_line(_cli("run", config, "--run-dir", run_dir), "127.0.0.1:9", "cannot reach the endpoint")
    assert _hashes(run_dir) == before


def test_wrong_api_key(run_copy, double, tmp_path):
    run_dir, before = run_copy
    config = _config(tmp_path / "c.toml", double.base_url, extra='api_key_env = "SOAK_WRONG_KEY"\n')
    _one_line(_cli("run", config, "--run-dir", run_dir, env={"SOAK_WRONG_KEY": "wrong"}), "401", "api_key_env")
    assert _hashes(run_dir) == before


def test_model_the_endpoint_lacks(run_copy, double, tmp_path):
    run_dir, before = run_copy
    sent = double.stats.total
    config = _config(tmp_path / "c.toml", double.base_url, model="no-such-model")
    _one_line(_cli("run", config, "--run-dir", run_dir), "404", "no-such-model")
    assert _hashes(run_dir) == before
    assert double.stats.total - sent <= 16  # at most one request per worker (concurrency 16): no retries


def test_corrupt_parquet(run_copy, double, base_run):
    run_dir, before = run_copy
    table = run_dir / "generated" / "de.parquet"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    # the single stage that reads it: one line naming the file
    _one_line(_cli("filter", run_dir), "generated/de.parquet", "cannot read Parquet", "re-run the stage")
    assert (run_dir / "accepted" / "de.parquet").read_bytes() == (base_run / "accepted" / "de.parquet").read_bytes()
    # the whole pipeline sees the table changed on disk and rebuilds it from the request cache
    sent = double.stats.total
    done = _cli("run", _config(run_dir.parent / "ok.toml", double.base_url), "--run-dir", run_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "generate: running" in done.stdout
    assert double.stats.total - sent == 0  # nothing sent again: every answer came from the cache
    assert pl.read_parquet(table).equals(pl.read_parquet(base_run / "generated" / "de.parquet"))


def test_run_directory_from_an_incompatible_version(run_copy, double, tmp_path):
    run_dir, before = run_copy
    manifest = run_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    data["layout_version"] = 99
    manifest.write_text(json.dumps(data))
    config = _config(tmp_path / "c.toml", double.base_url)
    _one_line(_cli("run", config, "--run-dir", run_dir), "manifest.json", "layout version 99", "start a new run")
    _one_line(_cli("status", run_dir), "layout version 99")
    assert _hashes(run_dir) == before
    assert json.loads(manifest.read_text())["layout_version"] == 99


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def test_disk_full_keeps_earlier_tables(base_run, double, tmp_path):
    """A run directory on a 2 MiB tmpfs (private mount namespace) filled to the last few KiB."""
    if not _can_mount_tmpfs():
        pytest.skip("no unprivileged 'unshare -rm' here to mount a tiny tmpfs")
    mount = tmp_path / "tiny"
    mount.mkdir()
    config = _config(tmp_path / "ok.toml", double.base_url)
    keep = tmp_path / "keep"  # outside the tmpfs: a copy of what the run had, to compare after
    shutil.copytree(base_run, keep)
    rejected_kib = sum(f.stat().st_size for f in (keep / "rejected").iterdir()) // 1024
    shutil.rmtree(keep / "rejected")  # the filter must write these again: that write hits the full disk
    headroom_kib = max(4, rejected_kib // 2)  # less room than the rejected tables need, whatever the double answered
    script = f"""set -e
mount -t tmpfs -o size=2m tmpfs {mount}
cp -a {keep} {mount}/run
avail=$(df -k --output=avail {mount} | tail -1)
head -c $(( (avail - {headroom_kib}) * 1024 )) /dev/zero > {mount}/filler 2>/dev/null || true
"$@" || code=$?
cp -a {mount}/run {tmp_path}/after
exit ${{code:-0}}
"""
    done = _cli("run", config, "--run-dir", mount / "run", prefix=["unshare", "-rm", "bash", "-c", script, "sh"])
    _one_line(done, "No space left on device", "re-run the same command")
    after = _hashes(tmp_path / "after")
    kept = _hashes(keep)
    assert {k: v for k, v in after.items() if k in kept} == kept  # nothing that existed was damaged
    assert not list((tmp_path / "after").rglob("*.tmp"))  # no temp file left behind
