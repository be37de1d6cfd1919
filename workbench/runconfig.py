"""Resolve the config a stage runs with: the run's ``run.toml``, an explicit file, CLI overrides.

Precedence: CLI options > ``--config FILE`` > the run's existing ``run.toml`` > defaults. The
resolved config is written back to ``run.toml`` so a run directory always records what it ran with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.config import RunConfig, load_config, parse_config
from workbench.run import Run, atomic_write_bytes


def _merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_run_config(
    run_dir: Path, config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> tuple[Run, RunConfig]:
    run = Run.create(run_dir)
    run.hold_writer_lock()  # one writer per run: refuse before touching run.toml
    if config_file is not None:
        config = load_config(config_file)
    elif run.config_path.is_file():
        config = load_config(run.config_path)
    else:
        config = RunConfig.model_validate({"run": {"name": Path(run_dir).name}})
    if overrides:
        config = parse_config(
            _merge(config.model_dump(mode="json", exclude_none=True), overrides),
            where="command-line options",
        )
    atomic_write_bytes(run.config_path, config.to_toml().encode())
    return run, config
