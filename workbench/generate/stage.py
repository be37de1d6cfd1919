"""The generate stage: plan rows -> tasks/ and generated/ (see :mod:`workbench.generate.engine`).

- :func:`run_generate` runs (or resumes) generation through the runner, directly or one Batch API
  step (submit, or collect and continue); ``dry_run=True`` only estimates and writes nothing;
- :func:`collect` ingests finished batches (:mod:`workbench.generate.batch`) and continues the stage;
- :func:`generate` is the stage's body: with ``[generate] batch = true`` and no single-step option
  (``workbench run``), it submits, polls, collects and submits the next step until the tables are
  written.

Dependencies go one way: this module uses the engine and the batch module; they do not import it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from workbench import checks
from workbench.config import GenerateSection, RunConfig, RunSection
from workbench.generate.batch import ingest_finished
from workbench.generate.engine import ProgressCallback, generate_tables, generation_notice, unfinished_summary
from workbench.languages import Registry
from workbench.run import Folder, Run, StageResult
from workbench.runner import Stage, StageInput, run_stage

__all__ = ["GENERATE", "collect", "generate", "generation_notice", "run_generate", "unfinished_summary"]
STAGE = "generate"
BATCH_STEP = "batch_step"  # option: one Batch API step (submit, or collect and continue), then return


def run_generate(run: Run, config: RunConfig, registry: Registry, *, dry_run: bool = False, batch: bool = False,
                 retry_failed: bool = False, progress: ProgressCallback | None = None) -> StageResult:
    """Generate (or resume) every planned slot through the runner; see the module docstring.

    ``batch`` (or ``[generate] batch``) takes one Batch API step and returns (status ``waiting`` while
    batches are open); ``retry_failed`` sends slots recorded as failed again (so it runs even when the
    stage is current).
    """
    batch = batch or config.generate.batch
    if dry_run:  # an estimate: read-only, no lock, no manifest
        return generate_tables(run, config.generate, registry, seed=config.run.seed, dry_run=True, batch=batch)
    options = {key: True for key, on in ((BATCH_STEP, batch), ("retry_failed", retry_failed)) if on}
    return run_stage(run, GENERATE, config, registry, options=options, progress=progress, force=retry_failed)


def collect(run: Run, config: RunConfig, registry: Registry) -> StageResult:
    """Ingest every finished batch into the cache, then continue the stage (submit next step or write tables)."""
    ingested = ingest_finished(run, config.generate)
    result = run_generate(run, config, registry, batch=True)
    result.stats["collected"] = ingested
    return result


def generate(inputs: StageInput, run_section: RunSection, section: GenerateSection, *,
             sleep: Callable[[float], None] = time.sleep) -> StageResult:
    """The generate stage's body.

    Directly, or one Batch API step (option ``batch_step``), or with ``[generate] batch = true``
    alone: submit, poll, collect and submit the next step until generated/ is written. Resumable:
    batches already open (in ``cache.sqlite``) are polled, not submitted again. The wait between
    polls starts at ``batch_poll_s`` and grows 1.5x per poll up to ``batch_poll_max_s``.
    """
    run, registry, seed = inputs.run, inputs.registry, run_section.seed
    retry_failed = bool(inputs.options.get("retry_failed"))
    if inputs.options.get(BATCH_STEP) or not section.batch:
        return generate_tables(run, section, registry, seed=seed, batch=bool(inputs.options.get(BATCH_STEP)),
                               retry_failed=retry_failed, progress=inputs.progress)
    result = generate_tables(run, section, registry, seed=seed, batch=True, retry_failed=retry_failed)
    wait = section.batch_poll_s
    while result.status == "waiting":
        jobs = result.stats.get("batch_jobs") or {}
        if inputs.notify:
            inputs.notify(f"{sum(jobs.values())} request(s) in {len(jobs)} open batch(es); next poll in {wait:.0f} s")
        sleep(wait)
        wait = min(section.batch_poll_max_s, wait * 1.5)
        ingested = ingest_finished(run, section)
        result = generate_tables(run, section, registry, seed=seed, batch=True)
        result.stats["collected"] = ingested
    return result


GENERATE = Stage(STAGE, reads=("plan",), sections=(RunSection, GenerateSection), body=generate,
                 writes=(Folder.TASKS, Folder.GENERATED), languages=True, check=checks.generate)
