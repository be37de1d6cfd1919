"""Every stage of the pipeline, declared once: plan → generate → filter → audit → train → eval → report.

A :class:`Stage` names the stage, the stages whose recorded outputs it reads, the config sections
it uses, its entry point (the module and function a newcomer opens, the one the single-stage
command calls) and how the pipeline calls it over a run directory. Everything that lists stages
derives from :data:`STAGES`: ``workbench run`` and its skip digests in ``pipeline.json``
(:mod:`workbench.pipeline`, the runner), ``workbench status``, and the ``[pipeline] stages``
vocabulary of the config.

Adding a stage: write ``<stage>.py`` (or ``<stage>/stage.py``) with one function over the run
that writes its tables atomically and records itself in the manifest (``Run.record_stage``),
then add one :class:`Stage` below, in pipeline order. This module imports no stage code at
import time (the config imports it); each ``call`` imports its stage when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.config import RunConfig
    from workbench.languages import Registry
    from workbench.run import Run


@dataclass
class StageCall:
    """What the runner hands a stage: the run, its resolved config, the registry, and the CLI's hooks."""

    run: Run
    config: RunConfig
    registry: Registry
    on_stage: Callable[[str, str], None] | None = None  # (stage, state line) for the CLI
    generate_progress: Callable[[Any], None] | None = None  # the generate engine's live counters


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]  # stages whose recorded outputs this stage reads (its inputs for the skip decision)
    sections: tuple[str, ...]  # config sections it depends on
    entry: str  # "module:function": the stage's code, as the single-stage command calls it
    writes: str  # what it leaves in the run directory
    call: Callable[[StageCall], Any]


def _plan(c: StageCall):
    from workbench.plan import run_plan

    return run_plan(c.run, c.config, c.registry)


def _generate(c: StageCall):
    from workbench.errors import WorkbenchError
    from workbench.generate.stage import run_generate, unfinished_summary

    if c.config.generate.batch:  # the Batch API end to end: submit, poll, collect, next step
        from workbench.generate.stage import run_until_done

        notify = (lambda line: c.on_stage("generate", line)) if c.on_stage else None
        result = run_until_done(c.run, c.config, c.registry, notify=notify)
    else:
        result = run_generate(c.run, c.config, c.registry, progress=c.generate_progress)
    entry = c.run.stage_entry("generate") or {}
    if entry.get("status") != "complete":
        raise WorkbenchError(
            f"generation is {entry.get('status', 'not complete')}: {unfinished_summary(result.stats)}",
            where=str(c.run.root),
            fix="re-run the same command to resume (finished requests are not sent again)",
        )
    return result


def _filter(c: StageCall):
    from workbench.filter.stage import run_filter

    return run_filter(c.run, c.config, c.registry)


def _audit(c: StageCall):
    from workbench.audit import run_audit

    return run_audit(c.run, c.config, c.registry)


def _train(c: StageCall):
    from workbench.train.stage import run_train

    return run_train(c.run, c.config, c.registry, show_progress=True)


def eval_systems(run: Run, config: RunConfig) -> list[tuple[str, str]]:
    """(system name, model) pairs for the eval stage: bm25, the base model, the trained model."""
    base = config.train.model or "minilm"
    base_name = "minilm" if base == "minilm" else Path(base).name
    systems = []
    for name in config.pipeline.eval_systems:
        if name == "bm25":
            systems.append(("bm25", "bm25"))
        elif name == "base":
            systems.append((base_name, base))
        elif name == "trained":
            systems.append((f"{base_name}-ft", str(run.stage_dir("train") / "model")))
    return systems


def _eval(c: StageCall):
    from workbench.eval.stage import run_eval

    results = []
    # [eval] and every [[pipeline.eval_also]] target, each with every system of [pipeline] eval_systems
    for target in [{}, *(t.model_dump() for t in c.config.pipeline.eval_also)]:
        for system, model in eval_systems(c.run, c.config):
            if model == "bm25" and target.get("task", c.config.eval.task) == "tatoeba":
                continue  # BM25 ranks passages; it has no vectors to mine bitext with
            section = c.config.eval.model_copy(update={**target, "model": model, "system": system, "bm25": False})
            results.append(run_eval(c.run, c.config.model_copy(update={"eval": section}), c.registry))
    return results


def _report(c: StageCall):
    from workbench.report.build import run_report

    audit_path = c.run.stage_dir("audit") / "summary.parquet"
    return run_report(
        c.run.stage_dir("report"),
        [c.run.stage_dir("eval") / "results.parquet", *c.config.report.results],
        audit=c.config.report.audit or (audit_path if audit_path.is_file() else None),
        config=c.config.report,
        registry=c.registry,
        run=c.run,
    )


STAGES: tuple[Stage, ...] = (
    Stage("plan", (), ("run",), "workbench.plan:run_plan", "plan/<lang>.parquet", _plan),
    Stage("generate", ("plan",), ("run", "generate"), "workbench.generate.stage:run_generate",
          "tasks/, generated/<lang>.parquet, cache.sqlite", _generate),
    Stage("filter", ("generate",), ("filter",), "workbench.filter.stage:run_filter",
          "accepted/<lang>.parquet, rejected/<lang>.parquet", _filter),
    Stage("audit", ("generate", "filter"), ("filter",), "workbench.audit:run_audit",
          "audit/ (summary.parquet, audit.json, index.html)", _audit),
    Stage("train", ("filter",), ("train",), "workbench.train.stage:run_train",
          "train/ (records, log, model/)", _train),
    Stage("eval", ("train",), ("eval", "pipeline"), "workbench.eval.stage:run_eval",
          "eval/ (results.parquet, per_query.parquet, mteb JSON)", _eval),
    Stage("report", ("eval", "audit"), ("report",), "workbench.report.build:run_report",
          "report/ (index.html, summary.md, tables)", _report),
)

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
