"""Every stage of the pipeline, in order: plan → generate → filter → audit → train → eval → report.

Each stage is a :class:`~workbench.runner.Stage` object declared in its own module, next to its
body and its public ``run_<stage>`` function; this module only lists them. Everything that lists
stages derives from :data:`STAGES`: ``workbench run`` (:mod:`workbench.pipeline`), ``workbench
status``, the checks a command runs before saving ``run.toml`` (:mod:`workbench.runconfig`) and the
``[pipeline] stages`` vocabulary of the config (checked against :data:`STAGE_NAMES` when a config
is loaded).

Adding a stage: one module with its body and its :class:`~workbench.runner.Stage` object (see
:mod:`workbench.runner`), and one line below, in pipeline order.
"""

from __future__ import annotations

from workbench.audit.stage import AUDIT
from workbench.eval.stage import EVAL
from workbench.filter.stage import FILTER
from workbench.generate.stage import GENERATE
from workbench.plan import PLAN
from workbench.report.stage import REPORT
from workbench.runner import Stage
from workbench.train.stage import TRAIN

STAGES: tuple[Stage, ...] = (
    PLAN,
    GENERATE,
    FILTER,
    AUDIT,
    TRAIN,
    EVAL,
    REPORT,
)

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
