"""The generate stage's entry points: plan rows -> tasks/ and generated/ (see :mod:`workbench.generate.engine`).

- :func:`run_generate` runs (or resumes) generation, directly or submitting to the Batch API;
- :func:`collect` ingests finished batches (:mod:`workbench.generate.batch`) and continues the stage;
- :func:`run_until_done` is what ``workbench run`` does with ``[generate] batch = true``: submit,
  poll, collect and submit the next step until the tables are written.

Dependencies go one way: this module uses the engine and the batch module; they do not import it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from workbench.config import RunConfig
from workbench.generate.batch import ingest_finished
from workbench.generate.engine import generation_notice, run_generate, unfinished_summary
from workbench.languages import Registry
from workbench.run import Run, StageResult

__all__ = ["collect", "generation_notice", "run_generate", "run_until_done", "unfinished_summary"]


def collect(run: Run, config: RunConfig, registry: Registry) -> StageResult:
    """Ingest every finished batch into the cache, then continue the stage (submit next step or write tables)."""
    ingested = ingest_finished(run, config)
    result = run_generate(run, config, registry, batch=True)
    result.stats["collected"] = ingested
    return result


def run_until_done(run: Run, config: RunConfig, registry: Registry, *,
                   notify: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep) -> StageResult:
    """Submit, poll, collect and submit the next step until generated/ is written (``workbench run``).

    Resumable: batches already open (in ``cache.sqlite``) are polled, not submitted again. The wait
    between polls starts at ``batch_poll_s`` and grows 1.5x per poll up to ``batch_poll_max_s``.
    """
    section = config.generate
    result = run_generate(run, config, registry, batch=True)
    wait = section.batch_poll_s
    while not result.outputs:
        jobs = result.stats.get("batch_jobs") or {}
        if notify:
            notify(f"{sum(jobs.values())} request(s) in {len(jobs)} open batch(es); next poll in {wait:.0f} s")
        sleep(wait)
        wait = min(section.batch_poll_max_s, wait * 1.5)
        result = collect(run, config, registry)
    return result

