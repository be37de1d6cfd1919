"""Fault soak: SIGKILL ``workbench run`` (plan → generate → filter → audit) at random points, resume.

The pipeline runs as a subprocess against the OpenAI test double (fixed latency, injected 429 /
500 / malformed answers / dropped connections, at most one fault per request key). For each seed it
is killed with SIGKILL at random moments and re-run with the same command until it exits 0; the
result is compared with an uninterrupted run:

- identical accepted/ and rejected/ tables (content hash of the sorted rows, without the columns
  that record how an answer was obtained rather than what it is: timestamps, attempts, tokens, cost);
- no request key that was finished in the cache before a kill is ever received again by the double;
- every planned slot appears exactly once in generated/ (and filtered rows = ok generated rows).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from workbench.testing.openai_double import Faults, OpenAIDouble

from conftest import REPO

LANGUAGES = ["de", "sw", "ja"]
PER_LANGUAGE = 10
# How an answer was obtained, not what it is: differs between a clean run and one with retries.
VOLATILE = {"created_at", "attempts", "prompt_tokens", "completion_tokens", "cost_usd"}
FAULTS = dict(latency=0.02, rate_429=0.04, rate_500=0.04, rate_malformed=0.04, rate_drop=0.02,
              retry_after=0.01, max_faults_per_key=1)


def _config(path: Path, base_url: str) -> Path:
    path.write_text(f"""
[run]
name = "soak"
seed = 7
languages = {LANGUAGES!r}
quota = {PER_LANGUAGE}

[generate]
base_url = "{base_url}"
model = "double"
structured_output = "json_schema"
concurrency = 8
timeout_s = 5.0
backoff_base_s = 0.01
backoff_max_s = 0.05

[pipeline]
stages = ["plan", "generate", "filter", "audit"]
""".replace("'", '"'))
    return path


def _command(config: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "run", str(config), "--run-dir", str(run_dir)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "soak-test", "OMP_NUM_THREADS": "1"}


def _finished_keys(run_dir: Path) -> set[str]:
    path = run_dir / "cache.sqlite"
    if not path.is_file():
        return set()
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return {k for (k,) in db.execute("SELECT key FROM requests WHERE status IN ('ok', 'failed')")}
    except sqlite3.OperationalError:  # created but no table yet
        return set()


def _stage_reached(run_dir: Path) -> str:
    """The first selected stage not complete in the manifest (where the kill landed)."""
    path = run_dir / "manifest.json"
    if not path.is_file():
        return "startup"

    stages = json.loads(path.read_text())["stages"]
    for stage in ("plan", "generate", "filter", "audit"):
        if (stages.get(stage) or {}).get("status") != "complete":
            return stage
    return "after audit"


def _table_hash(folder: Path) -> str:
    frames = [pl.read_parquet(p) for p in sorted(folder.glob("*.parquet"))]
    assert frames, f"no tables in {folder}"
    df = pl.concat(frames, how="vertical")
    df = df.select(sorted(c for c in df.columns if c not in VOLATILE)).sort("slot_id")
    digest = hashlib.sha256()
    for row in df.iter_rows():
        digest.update(repr(row).encode())
    return digest.hexdigest()


def _outputs(run_dir: Path) -> dict[str, object]:
    plan = pl.concat([pl.read_parquet(p) for p in sorted((run_dir / "plan").glob("*.parquet"))])
    generated = pl.concat([pl.read_parquet(p) for p in sorted((run_dir / "generated").glob("*.parquet"))])
    accepted = pl.concat([pl.read_parquet(p) for p in sorted((run_dir / "accepted").glob("*.parquet"))])
    rejected = pl.concat([pl.read_parquet(p) for p in sorted((run_dir / "rejected").glob("*.parquet"))])
    # no slot lost or duplicated: generated/ holds each planned slot exactly once
    assert generated["slot_id"].n_unique() == generated.height
    assert sorted(generated["slot_id"]) == sorted(plan["slot_id"])
    ok = generated.filter(pl.col("status") == "ok")
    filtered = pl.concat([accepted["slot_id"], rejected["slot_id"]])
    assert sorted(filtered) == sorted(ok["slot_id"])
    assert (run_dir / "audit" / "summary.parquet").is_file()
    return {"accepted": _table_hash(run_dir / "accepted"), "rejected": _table_hash(run_dir / "rejected"),
            "generated": _table_hash(run_dir / "generated"), "slots": generated.height,
            "ok": ok.height, "accepted_rows": accepted.height}


def _reference(shared_data: Path, tmp: Path) -> tuple[dict[str, object], float]:
    with OpenAIDouble(shared_data, Faults(**FAULTS, seed=99), models=("double",), deterministic=True) as double:
        config = _config(tmp / "ref.toml", double.base_url)
        start = time.monotonic()
        done = subprocess.run(_command(config, tmp / "ref"), env=_env(), capture_output=True, text=True, timeout=120)
        seconds = time.monotonic() - start
        assert done.returncode == 0, done.stderr[-2000:]
        assert max(double.stats.answered.values()) >= 1
    return _outputs(tmp / "ref"), seconds


@pytest.fixture(scope="module")
def reference(shared_data, tmp_path_factory):
    return _reference(shared_data, tmp_path_factory.mktemp("soak-ref"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_anywhere_then_resume_matches_uninterrupted(seed, reference, shared_data, tmp_path):
    expected, full_seconds = reference
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    kills = 0
    stages: list[str] = []
    scale = 0.8  # of the reference run's wall time; halved if a run finishes before its first kill
    with OpenAIDouble(shared_data, Faults(**FAULTS, seed=seed), models=("double",), deterministic=True) as double:
        config = _config(tmp_path / "soak.toml", double.base_url)
        for attempt in range(12):
            finished_before = _finished_keys(run_dir)
            received_before = dict(double.stats.received)
            process = subprocess.Popen(_command(config, run_dir), env=_env(), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
            # kills land anywhere in a full run (imports, plan, generate, filter, audit); once three
            # have landed inside a stage (not after the last one) the run is left to finish
            inside = sum(stage in ("plan", "generate", "filter", "audit") for stage in stages)
            # later invocations resume, so they are shorter: their kill window shrinks
            deadline = rng.uniform(0.2, full_seconds * scale * 0.7**kills) if inside < 3 and attempt < 9 else None
            try:
                process.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
                stages.append(_stage_reached(run_dir))
            else:
                stderr = process.stderr.read()
                assert process.returncode == 0, f"resume {attempt} failed: {stderr[-2000:]}"
            process.stderr.close()
            # a request whose answer was stored before this invocation is never sent again
            resent = {k for k in finished_before if double.stats.received[k] != received_before.get(k, 0)}
            assert not resent, f"{len(resent)} finished request(s) sent again, e.g. {sorted(resent)[:3]}"
            if process.returncode == 0 and kills == 0:  # finished before the kill (a faster moment): again
                shutil.rmtree(run_dir)
                scale /= 2
                continue
            if process.returncode == 0:
                break
        else:
            pytest.fail("the pipeline did not complete after 12 invocations")
    assert kills >= 1
    got = _outputs(run_dir)
    print(f"seed {seed}: killed during {stages}, {attempt + 1} invocations, "
          f"{double.stats.total} requests received for {len(double.stats.received)} keys, faults injected "
          f"{ {k: sum(v.values()) for k, v in double.stats.faults.items() if v} } (reference run: {full_seconds:.1f} s)")
    assert got == expected, f"seed {seed}: killed during {stages}; outputs differ from the uninterrupted run"
