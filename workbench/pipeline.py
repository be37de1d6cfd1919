"""``workbench run``: every selected stage of :data:`workbench.stages.STAGES`, in pipeline order,
each through :func:`workbench.runner.run_stage` (a current stage is skipped and rewrites nothing).

Example::

    workbench run examples/quickstart.toml            # -> runs/quickstart/
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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


def resolve_pipeline_config(config_file: Path, run_dir: Path | None, registry: Registry, *,
                            write: bool = True) -> tuple[Run, RunConfig, dict[str, str]]:
    """``workbench run CONFIG``: (the run, by default ``runs/<[run] name>``, its config, the languages
    the plan leaves out and why). Those languages (eval-only, no quota) never reach ``run.toml``'s
    list; the config file's languages are checked with the run's config, naming the file."""
    from workbench.config import load_config
    from workbench.plan import planned_languages
    from workbench.runconfig import resolve_run_config

    requested = load_config(config_file)
    target = run_dir or Path("runs") / requested.run.name
    kept, left_out = (planned_languages(requested, registry, f"{config_file}: field 'run.languages'")
                      if "plan" in requested.pipeline.stages else (None, {}))
    overrides = {"run": {"languages": kept}} if kept is not None else None
    run, config = resolve_run_config(target, config_file, overrides, write=write, pipeline=write)
    return run, config, left_out


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
