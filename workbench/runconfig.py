"""Resolve the config a stage runs with: the run's ``run.toml``, an explicit file, CLI overrides.

Precedence: CLI options > ``--config FILE`` > the run's existing ``run.toml`` > defaults. The
resolved config is written back to ``run.toml`` so a run directory always records what it ran with
— but only once it has passed validation (language codes included), and never by read-only
commands (``write=False``). Only ``plan`` and ``run`` may create a run directory (``create=True``);
every other command opens an existing one, so a mistyped RUN creates nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.config import RunConfig, load_config, parse_config
from workbench.errors import UnknownLanguageError
from workbench.run import Run, atomic_write_bytes


def _merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_languages(config: RunConfig, where: str) -> None:
    """Every language the run selects exists in the registry (one line with a suggestion if not)."""
    from workbench.languages import load_registry

    registry = load_registry()
    field = "run.languages"
    try:
        registry.select(config.run.languages)
        field = "run.quotas"
        for code in config.run.quotas:
            registry.get(code)
    except UnknownLanguageError as err:
        located = where if where.startswith("--") else f"{where}: field '{field}'"
        raise UnknownLanguageError(err.message, where=located, fix=err.fix) from None


def resolve_run_config(
    run_dir: Path, config_file: Path | None = None, overrides: dict[str, Any] | None = None, *,
    create: bool = True, write: bool = True,
) -> tuple[Run, RunConfig]:
    """The run and its resolved config; ``run.toml`` is written only after every check passed.

    ``create=False`` requires an existing run directory; ``write=False`` leaves ``run.toml`` as it is
    (dry runs, estimates, status views) and takes no writer lock. A writing call holds the run's
    writer lock (one writer per run) before it reads the run's config.
    """
    existing = (Path(run_dir) / "manifest.json").is_file()
    if not create or existing:
        run = Run.open(run_dir)
        if write:
            run.hold_writer_lock()  # one writer per run: refuse before touching run.toml
    else:
        run = Run(Path(run_dir))  # created below, once the config has passed its checks
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
    if not write:
        return run, config
    from_options = bool(((overrides or {}).get("run") or {}).keys() & {"languages", "quotas"})
    check_languages(config, "--languages" if from_options else str(config_file or run.config_path))
    if not existing:
        run = Run.create(run_dir)
        run.hold_writer_lock()
    atomic_write_bytes(run.config_path, config.to_toml().encode())
    return run, config
