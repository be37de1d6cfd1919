"""What a run directory holds: each stage's state, row counts, cost and time, from manifest.json.

Read-only: nothing here writes to the run. A stage the manifest records as ``running`` is shown as
running only while a live process holds the run's lock; otherwise it was interrupted (killed,
crashed, machine lost) and the row says how to resume it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench.run import Run

STAGE_ORDER = ("plan", "generate", "filter", "audit", "train", "eval", "report")
LOCK_FILE = ".lock"  # the one-writer lock: the holder's pid (see Run.lock)


def lock_holder(run: Run) -> int | None:
    """The pid of the live process holding the run's lock, or None.

    Uses ``Run.lock_holder`` where the run has it; otherwise reads the pid in ``<run>/.lock`` and
    checks that the process exists.
    """
    if hasattr(run, "lock_holder"):
        return run.lock_holder()
    try:
        pid = int((run.root / LOCK_FILE).read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid > 0 and _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def resume_command(run: Run, stage: str) -> str:
    """The command that resumes ``stage``: the pipeline's when ``workbench run`` drove the run."""
    if (run.root / "pipeline.json").is_file():
        return f"workbench run {run.config_path} --run-dir {run.root}"
    return f"workbench {stage} {run.root}"


def run_status(run_dir: Path | str) -> list[dict[str, Any]]:
    """One row per stage in pipeline order (stages never run show as 'not run')."""
    run = Run.open(run_dir)
    stages = run.manifest()["stages"]
    names = list(STAGE_ORDER) + sorted(set(stages) - set(STAGE_ORDER))
    holder = lock_holder(run)
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
        if state == "running":
            state = f"running (pid {holder})" if holder else f"interrupted (resume with '{resume_command(run, name)}')"
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
