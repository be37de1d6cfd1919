"""The stage declaration is the one list of stages: its entries exist, and run/status/config follow it."""

from __future__ import annotations

import importlib

import pytest

from workbench.config import PipelineSection, RunConfig, parse_config
from workbench.errors import ConfigError
from workbench.run import Run
from workbench.stages import BY_NAME, STAGE_NAMES, STAGES, DeclaredConfig, UndeclaredSection
from workbench.status import run_status


def test_every_declared_entry_and_body_is_a_function_and_reads_only_earlier_stages():
    seen: list[str] = []
    for stage in STAGES:
        for where in (stage.entry, stage.body):
            module, _, function = where.partition(":")
            assert callable(getattr(importlib.import_module(module), function)), where
        assert stage.entry.split(":")[0] == stage.body.split(":")[0], "a stage's entry and body live in one module"
        assert set(stage.reads) <= set(seen), f"{stage.name} reads a later stage: {stage.reads}"
        assert set(stage.sections) <= set(RunConfig.model_fields), stage.sections
        seen.append(stage.name)
    assert len(set(seen)) == len(seen)


def test_a_stage_body_sees_only_the_config_sections_its_stage_declares():
    config = RunConfig()
    view = DeclaredConfig(config, BY_NAME["filter"])
    assert view.filter is config.filter
    with pytest.raises(UndeclaredSection, match="stage 'filter' reads config section 'train'.*workbench/stages.py"):
        view.train
    assert not hasattr(DeclaredConfig(config, BY_NAME["audit"]), "run")  # the audit declares no section


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
