"""The stage list is the one list of stages: each stage is an object in its own module, and
run/status/config follow the list."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from workbench.config import PipelineSection, RunConfig, Section, parse_config
from workbench.errors import ConfigError
from workbench.run import Run
from workbench.runner import StageInput
from workbench.stages import STAGE_NAMES, STAGES
from workbench.status import run_status


def test_every_stage_body_takes_exactly_the_typed_sections_it_declares_and_reads_only_earlier_stages():
    seen: list[str] = []
    for stage in STAGES:
        assert all(issubclass(section, Section) for section in stage.sections), stage.sections
        assert set(stage.section_names) <= set(RunConfig.model_fields), stage.section_names
        positional = [p for p in inspect.signature(stage.body).parameters.values()
                      if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        hints = inspect.get_annotations(stage.body, eval_str=True)
        assert hints[positional[0].name] is StageInput, stage.name
        assert [hints[p.name] for p in positional[1:]] == list(stage.sections), f"{stage.name}: body and sections differ"
        if stage.outside is not None:
            outside = inspect.get_annotations(stage.outside, eval_str=True)
            assert [v for k, v in outside.items() if k != "return"] == list(stage.sections), stage.name
            assert isinstance(stage.outside(*stage.sections_of(RunConfig())), list)
        assert inspect.getmodule(stage.body) is inspect.getmodule(stage.outside or stage.body)
        assert set(stage.reads) <= set(seen), f"{stage.name} reads a later stage: {stage.reads}"
        seen.append(stage.name)
    assert len(set(seen)) == len(seen)


def test_the_config_imports_no_stage_code():
    """config.py validates [pipeline] stages against the stage list when a config is loaded; the
    stage modules import their sections from it, so importing it must not import them (no cycle)."""
    probe = ("import sys, workbench.config; "
             "print(sorted(m for m in sys.modules if m in ('workbench.stages', 'workbench.runner') or m.endswith('.stage')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_config_status_and_pipeline_order_come_from_the_declaration(tmp_path):
    assert PipelineSection().stages == list(STAGE_NAMES)
    with pytest.raises(ConfigError, match="pipeline.stages"):
        parse_config({"pipeline": {"stages": ["plan", "trian"]}}, where="test")
    run = Run.create(tmp_path / "run")
    assert [row["stage"] for row in run_status(run.root)] == list(STAGE_NAMES)


def test_the_eval_task_vocabulary_is_the_target_table():
    from workbench.eval.targets import TARGETS

    for task in TARGETS:
        assert parse_config({"eval": {"task": task}}, where="test").eval.task == task
        assert parse_config({"pipeline": {"eval_also": [{"task": task}]}}, where="test").pipeline.eval_also[0].task == task
    with pytest.raises(ConfigError, match="eval.task"):
        parse_config({"eval": {"task": "miracle"}}, where="test")
