"""What a run directory holds: each stage's state, row counts, cost and time, from manifest.json.

Read-only: nothing here writes to the run. A stage the manifest records as ``running`` is shown as
running only while a live process holds the run's lock; otherwise it was interrupted (killed,
crashed, machine lost) and the row says how to resume it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.run import Run
from workbench.runner import VIA_PIPELINE
from workbench.stages import STAGE_NAMES as STAGE_ORDER  # pipeline order, declared once


def resume_command(run: Run, stage: str) -> str:
    """The command that resumes ``stage``: the pipeline's when ``workbench run`` ran it."""
    if (run.stage_entry(stage) or {}).get("via") == VIA_PIPELINE:
        return f"workbench run {run.config_path} --run-dir {run.root}"
    return f"workbench {stage} {run.root}"


def run_status(run_dir: Path | str) -> list[dict[str, Any]]:
    """One row per stage in pipeline order (stages never run show as 'not run')."""
    run = Run.open(run_dir)
    stages = run.manifest()["stages"]
    names = list(STAGE_ORDER) + sorted(set(stages) - set(STAGE_ORDER))
    holder = run.lock_holder()  # pid of the live writer, -1 if it wrote none, None if nobody holds the run
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
        if state == "waiting":
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
