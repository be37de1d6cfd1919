"""Every script under benchmarks/ still runs: each in its ``--smoke`` mode (tiny sizes, seconds on an
idle machine, no figures asserted), so a refactor that breaks one (an import that moved, a changed
signature) fails here instead of at the next measurement. A new script is picked up by the glob and
must have a ``--smoke`` flag too.

``train_gpu.py --smoke`` is its CPU dry run (gloo, a tiny Mistral shape, one step per batch size);
``generate_throughput.py --smoke`` leaves out the embedded SmolLM2 server, whose start alone takes
longer than the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))


def test_every_benchmark_is_listed():
    assert len(SCRIPTS) >= 8, [p.name for p in SCRIPTS]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_runs_in_smoke_mode(script, shared_data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(script), "--smoke"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=840)
    assert done.returncode == 0, f"{script.name} --smoke exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stdout.strip(), f"{script.name} --smoke printed no table"
