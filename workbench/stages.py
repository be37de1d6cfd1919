"""Every stage of the pipeline, declared once: plan → generate → filter → audit → train → eval → report.

A :class:`Stage` names the stage, the stages whose recorded outputs it reads, the config sections
it uses, whether the language files shape its outputs, its public entry (the function a newcomer
opens and the single-stage command calls) and its body (the work itself). Everything that lists
stages derives from :data:`STAGES`: the runner (:mod:`workbench.runner`: ``workbench run``, the
skip decision, the manifest records), ``workbench status``, and the ``[pipeline] stages``
vocabulary of the config.

A body takes one :class:`StageInput` and returns a :class:`~workbench.run.StageResult`; it reads
only the config sections its stage declares (anything else raises :class:`UndeclaredSection`, so
the skip digest, which hashes exactly those sections, cannot miss a setting the stage uses) and
never writes the manifest: the runner records it.

Adding a stage: write ``<stage>.py`` (or ``<stage>/stage.py``) with its body and a public
``run_<stage>(run, config, registry)`` that calls :func:`workbench.runner.run_stage`, then add one
:class:`Stage` below, in pipeline order. This module imports no stage code (the config imports it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.config import RunConfig
    from workbench.languages import Registry
    from workbench.run import Run


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]  # stages whose recorded outputs this stage reads (they join its digest)
    sections: tuple[str, ...]  # config sections it uses (they join its digest; nothing else is visible to it)
    languages: bool  # the language files shape its outputs (their content joins its digest)
    entry: str  # "module:function": the public stage function the single-stage command calls
    body: str  # "module:function": the work, called by the runner with a StageInput
    writes: str  # what it leaves in the run directory
    # "module:function" (DeclaredConfig -> paths): files and folders outside the run the stage reads
    # (the filter's LID models, train's base model and DeepSpeed JSON, eval's data folders and models,
    # report's extra tables); the runner puts their state in the digest
    outside: str | None = None
    # "module:function" (RunConfig, pipeline) -> None: the stage's own checks of its settings
    # (model and data folders exist, ...), run before run.toml records them (workbench/checks.py)
    check: str | None = None


class UndeclaredSection(AttributeError):
    """A stage body read a config section its :class:`Stage` does not declare (a bug in the stage)."""


class DeclaredConfig:
    """The run config as a stage body sees it: only the sections its stage declares."""

    def __init__(self, config: RunConfig, stage: Stage):
        self._config = config
        self._stage = stage

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._stage.sections:
            return getattr(self._config, name)
        raise UndeclaredSection(
            f"stage '{self._stage.name}' reads config section '{name}' but declares only "
            f"{', '.join(self._stage.sections) or 'none'}: add it to the stage's sections in workbench/stages.py")


@dataclass
class StageInput:
    """What the runner hands a stage body."""

    stage: str
    run: Run
    config: DeclaredConfig  # the declared sections only
    registry: Registry
    options: dict[str, Any] = field(default_factory=dict)  # the call's own settings (part of the digest)
    # the CLI's live view (generate: counters; filter: done, total; train, eval: workbench.progress states)
    progress: Callable[..., None] | None = None
    notify: Callable[[str], None] | None = None  # one state line for the CLI (e.g. batch polling)


STAGES: tuple[Stage, ...] = (
    Stage("plan", (), ("run",), True, "workbench.plan:run_plan", "workbench.plan:write_plan",
          "plan/<lang>.parquet", check="workbench.checks:plan"),
    Stage("generate", ("plan",), ("run", "generate"), True, "workbench.generate.stage:run_generate",
          "workbench.generate.stage:generate", "tasks/, generated/<lang>.parquet, cache.sqlite",
          check="workbench.checks:generate"),
    Stage("filter", ("generate",), ("filter",), True, "workbench.filter.stage:run_filter",
          "workbench.filter.stage:filter_generated", "accepted/<lang>.parquet, rejected/<lang>.parquet",
          outside="workbench.filter.stage:outside_inputs", check="workbench.checks:filter"),
    Stage("audit", ("plan", "generate", "filter"), (), True, "workbench.audit:run_audit",
          "workbench.audit:write_audit", "audit/ (summary.parquet, audit.json, index.html)"),
    Stage("train", ("filter",), ("run", "train"), False, "workbench.train.stage:run_train",
          "workbench.train.stage:train_model", "train/ (records, log, model/)",
          outside="workbench.train.stage:outside_inputs", check="workbench.checks:train"),
    Stage("eval", ("train",), ("eval", "pipeline", "train"), False, "workbench.eval.stage:run_eval",
          "workbench.eval.stage:evaluate", "eval/ (results.parquet, per_query.parquet, mteb JSON)",
          outside="workbench.eval.stage:outside_inputs", check="workbench.checks:eval"),
    Stage("report", ("train", "eval", "audit"), ("report",), True, "workbench.report.stage:run_report",
          "workbench.report.stage:write_report", "report/ (index.html, summary.md, tables)",
          outside="workbench.report.stage:outside_inputs", check="workbench.checks:report"),
)

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
