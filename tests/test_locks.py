"""A run's locks (``run.lock``): the writer lock held for a CLI command, the manifest lock between
processes, and torchrun ranks other than 0, which belong to rank 0's job."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from workbench.config import parse_config
from workbench.errors import WorkbenchError
from workbench.languages import load_registry
from workbench.locks import command_scope
from workbench.plan import run_plan
from workbench.run import Run

from conftest import REPO

# Holds the run's writer lock (argv[2] == "writer") or its manifest lock ("manifest") until stdin closes.
HOLD = """
import sys
from pathlib import Path
from workbench.run import Run
run = Run.open(Path(sys.argv[1]))
with (run.lock.writer() if sys.argv[2] == "writer" else run.lock.manifest()):
    print("locked", flush=True)
    sys.stdin.read()
"""

# Records one stage entry: waits for the manifest lock while another process holds it.
RECORD = """
import sys
from pathlib import Path
from workbench.run import Run
run = Run.open(Path(sys.argv[1]))
print("recording", flush=True)
run.record_stage(sys.argv[2], status="complete", config_hash="h")
"""


def _holding(run: Run, which: str) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run.root), which], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _release(holder: subprocess.Popen) -> None:
    holder.stdin.close()
    assert holder.wait(timeout=60) == 0


def _config():
    return parse_config({"run": {"name": "r", "languages": ["sw"], "quota": 3, "seed": 1}}, where="test")


def test_a_lock_held_for_the_command_lasts_until_the_command_ends(tmp_path):
    run = Run.create(tmp_path / "run")
    with command_scope():
        run.lock.hold()
        assert run.lock.holder() == os.getpid()
        Run.open(run.root).lock.hold()  # a second Run of the same folder in this process shares the lock
        assert run.lock.holder() == os.getpid()
    assert run.lock.holder() is None
    run.lock.hold()  # outside a command: a check that nobody else writes the run, nothing held
    assert run.lock.holder() is None


def test_another_writer_is_refused_with_one_line_naming_it(tmp_path):
    run = Run.create(tmp_path / "run")
    holder = _holding(run, "writer")
    try:
        assert run.lock.holder() == holder.pid
        with pytest.raises(WorkbenchError) as refused, command_scope():
            run.lock.hold()
        assert refused.value.line() == (f"{run.root}: another workbench process (pid {holder.pid}) is "
                                        f"writing this run (wait for it to finish or stop it (kill {holder.pid}), "
                                        "then re-run this command)")
    finally:
        _release(holder)
    assert run.lock.holder() is None


def test_a_manifest_update_waits_for_the_process_holding_the_manifest_lock(tmp_path):
    run = Run.create(tmp_path / "run")
    holder = _holding(run, "manifest")
    recorder = subprocess.Popen([sys.executable, "-c", RECORD, str(run.root), "audit"], stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert recorder.stdout.readline().strip() == "recording"
        with pytest.raises(subprocess.TimeoutExpired):
            recorder.wait(timeout=2)  # blocked on the lock, not finished
        assert run.stage_entry("audit") is None
    finally:
        _release(holder)
    assert recorder.wait(timeout=60) == 0
    assert run.stage_entry("audit")["status"] == "complete"


def test_a_torchrun_follower_takes_no_writer_lock_and_records_nothing(tmp_path, monkeypatch):
    registry = load_registry()
    run = Run.create(tmp_path / "run")
    holder = _holding(run, "writer")  # rank 0 of the job, say
    try:
        monkeypatch.setenv("RANK", "1")
        assert run.lock.follower
        result = run_plan(run, _config(), registry)  # rank 1 runs the stage under rank 0's lock
        assert result.outputs == {"plan/sw.parquet": 3}
        assert run.stage_entry("plan") is None  # rank 0 records the manifest, not rank 1
        assert (run.root / "logs" / "plan.rank1.log").is_file()
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(WorkbenchError, match="is writing this run"):
            run_plan(run, _config(), registry)
    finally:
        _release(holder)
    assert not run_plan(run, _config(), registry).current
    assert run.stage_entry("plan")["status"] == "complete"
