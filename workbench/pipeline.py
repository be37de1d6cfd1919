"""``workbench run``: every selected stage of :data:`workbench.stages.STAGES`, in pipeline order,
each through :func:`workbench.runner.run_stage` (a current stage is skipped and rewrites nothing).

Example::

    workbench run examples/quickstart.toml            # -> runs/quickstart/
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.languages import Registry
from workbench.run import Run
from workbench.runner import VIA_PIPELINE, run_stage
from workbench.stagelog import logged_note
from workbench.stages import STAGES


@dataclass
class StageOutcome:
    stage: str
    state: str  # ran | skipped | not selected
    seconds: float = 0.0


def run_pipeline(
    run: Run,
    config: RunConfig,
    registry: Registry,
    *,
    on_stage: Callable[[str, str], None] | None = None,
    progress: dict[str, Callable[[Any], None]] | None = None,
) -> list[StageOutcome]:
    """Run every selected stage in declaration order; current stages are skipped. A stage that ends
    short of complete (generation with requests still unanswered) stops the pipeline with one line.

    ``on_stage(stage, state line)`` and ``progress`` (per stage, the view its live state goes to:
    generate's counters, train's steps, eval's texts) are the CLI's hooks.
    """
    outcomes: list[StageOutcome] = []
    with run.lock.writer():
        for declared in STAGES:
            stage = declared.name
            if stage not in config.pipeline.stages:
                outcomes.append(StageOutcome(stage, "not selected"))
                continue
            start = time.perf_counter()
            notify = (lambda line, stage=stage: on_stage(stage, line)) if on_stage else None
            result = run_stage(run, declared, config, registry,
                               progress=(progress or {}).get(stage), notify=notify, via=VIA_PIPELINE)
            seconds = time.perf_counter() - start
            if result.current:
                outcomes.append(StageOutcome(stage, "skipped"))
                if on_stage:
                    on_stage(stage, "skipped (current)")
                continue
            if result.status != "complete":
                raise WorkbenchError(
                    f"{stage} is {result.status}: {result.stats.get('incomplete') or 'see workbench status'}",
                    where=str(run.root),
                    fix="re-run the same command to resume (finished work is not done again)")
            outcomes.append(StageOutcome(stage, "ran", seconds))
            if on_stage:
                note = logged_note(result.stats, run.root)
                on_stage(stage, f"done in {seconds:.1f} s" + (f"; {note}" if note else ""))
    return outcomes
