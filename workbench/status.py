"""What a run directory holds: each stage's state, row counts, cost and time, from manifest.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.run import Run

STAGE_ORDER = ("plan", "generate", "filter", "audit", "train", "eval", "report")


def run_status(run_dir: Path | str) -> list[dict[str, Any]]:
    """One row per stage in pipeline order (stages never run show as 'not run')."""
    run = Run.open(run_dir)
    stages = run.manifest()["stages"]
    names = list(STAGE_ORDER) + sorted(set(stages) - set(STAGE_ORDER))
    rows = []
    for name in names:
        entry = stages.get(name)
        if entry is None:
            rows.append({"stage": name, "status": "not run", "tables": 0, "rows": 0,
                         "cost_usd": None, "finished_at": None})
            continue
        outputs = entry.get("outputs", {})
        stats = entry.get("stats", {})
        rows.append(
            {
                "stage": name,
                "status": entry.get("status", "?"),
                "tables": len(outputs),
                "rows": sum(info.get("rows") or 0 for info in outputs.values()),
                "cost_usd": stats.get("cost_usd"),
                "finished_at": entry.get("finished_at"),
            }
        )
    return rows
