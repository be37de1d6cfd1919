"""What a run directory holds: each stage's state, row counts, cost and time, from manifest.json.

Read-only: nothing here writes to the run. A stage the manifest records as ``running`` is shown as
running only while a live process holds the run's lock; otherwise it was interrupted (killed,
crashed, machine lost) and the row says how to resume it. A stage recorded ``complete`` is shown so
only while every output it recorded is on disk with the recorded size and sha256; otherwise the
row names the file that changed and the command that writes it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.run import Run, file_sha256
from workbench.runner import VIA_PIPELINE
from workbench.stages import STAGE_NAMES as STAGE_ORDER  # pipeline order, listed once


def resume_command(run: Run, stage: str) -> str:
    """The command that resumes ``stage``: the pipeline's when ``workbench run`` ran it."""
    if (run.stage_entry(stage) or {}).get("via") == VIA_PIPELINE:
        return f"workbench run {run.config_path} --run-dir {run.root}"
    return f"workbench {stage} {run.root}"


def output_problem(run: Run, outputs: dict[str, Any]) -> str | None:
    """What is wrong with a stage's recorded outputs on disk now, or None: a file missing, of
    another size, or (where a digest was recorded) with other content."""
    for rel, info in sorted(outputs.items()):
        info = info or {}
        path = run.root / rel
        if info.get("sha256") is None and info.get("bytes") is None:
            continue  # nothing recorded to compare with (an output the stage did not write)
        if not path.is_file():
            return f"{rel} is missing"
        if info.get("bytes") is not None and path.stat().st_size != info["bytes"]:
            return f"{rel} changed on disk ({path.stat().st_size:,} bytes, {info['bytes']:,} recorded)"
        if info.get("sha256") is not None and file_sha256(path) != info["sha256"]:
            return f"{rel} changed on disk (its sha256 differs from the one recorded)"
    return None


def run_status(run: Run | Path | str) -> list[dict[str, Any]]:
    """One row per stage in pipeline order (stages never run show as 'not run'); ``run``: a run
    directory, or the :class:`Run` a command already opened (``workbench run`` shows its status)."""
    run = run if isinstance(run, Run) else Run.open(run)
    stages = run.manifest()["stages"]
    names = list(STAGE_ORDER) + sorted(set(stages) - set(STAGE_ORDER))
    holder = run.lock.holder()  # pid of the live writer, -1 if it wrote none, None if nobody holds the run
    rows = []
    for name in names:
        entry = stages.get(name)
        if entry is None:
            rows.append({"stage": name, "status": "not run", "tables": 0, "rows": 0,
                         "cost_usd": None, "finished_at": None})
            continue
        outputs = entry.get("outputs", {})
        stats = entry.get("stats", {})
        state = entry.get("status", "?")
        if state == "complete" and (problem := output_problem(run, outputs)):
            state = f"outputs changed: {problem} (re-run '{resume_command(run, name)}' to write it again)"
        elif state == "waiting":
            state = f"waiting for open batches ('workbench batch collect {run.root}')"
        elif state == "running":
            if holder is None:
                state = f"interrupted (resume with '{resume_command(run, name)}')"
            else:
                state = f"running (pid {holder})" if holder > 0 else "running"
        rows.append(
            {
                "stage": name,
                "status": state,
                "tables": len(outputs),
                "rows": sum(info.get("rows") or 0 for info in outputs.values()),
                "cost_usd": stats.get("cost_usd"),
                "finished_at": entry.get("finished_at"),
            }
        )
    return rows
