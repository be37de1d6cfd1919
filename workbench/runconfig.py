"""Resolve the config a stage runs with: the run's ``run.toml``, an explicit file, CLI options.

Precedence, key by key: CLI options > ``--config FILE`` (or the CONFIG of ``workbench run``) > the
run's existing ``run.toml`` > defaults. Each layer is merged into the one below it per setting
(``[filter] workers = 1`` in a file changes that one setting and nothing else); a setting whose value
is a table or a list (``[run.quotas]``, ``languages``) is replaced as a whole. Defaults only fill
what no layer gives: a new run. An existing run directory without ``run.toml`` is an error, never
a silent return to defaults.

The resolved config is written back to ``run.toml`` so a run directory always records what it ran
with — but only once it has passed validation (types, language codes) and the checks of the
stages the command runs (:mod:`workbench.checks`: model and data folders, ...), and never by
read-only commands (``write=False``). Only ``plan`` and ``run`` may create a run directory
(``create=True``); every other command opens an existing one, so a mistyped RUN creates nothing.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workbench import logs
from workbench.config import RunConfig, parse_config
from workbench.errors import ConfigError, UnknownLanguageError, WorkbenchError
from workbench.run import CONFIG, MANIFEST, Run, atomic_write_bytes


def merge_layers(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """``updates`` over ``base``, section by section and setting by setting (values replace whole)."""
    merged = dict(base)
    for section, settings in updates.items():
        if isinstance(settings, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **settings}
        else:
            merged[section] = settings
    return merged


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's raw tables (the layer it adds); one line for a missing or malformed file."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config file not found", where=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("is a folder, not a config file", where=str(path)) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text ({err.reason} at byte {err.start})", where=str(path),
                          fix="save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", where=str(path), fix="fix the syntax") from None


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


def check_stages(config: RunConfig, stages: Iterable[str], *, pipeline: bool = False,
                 saved: RunConfig | None = None) -> None:
    """The own checks of each stage in ``stages`` (``Stage.check``, see :mod:`workbench.checks`).

    With ``saved`` (the run's ``run.toml``), a stage whose declared sections are unchanged is not
    checked again: its settings passed when they were saved (re-running a finished pipeline needs
    no endpoint, for instance)."""
    from workbench.stages import BY_NAME  # every stage module: only once a command checks its stages

    for name in stages:
        declared = BY_NAME[name]
        if not declared.check:
            continue
        if saved is not None and declared.sections_of(saved) == declared.sections_of(config):
            continue
        declared.check(config, pipeline)


def open_run(run_dir: Path, *, create: bool = True) -> Run:
    """The run directory a command works on, opened once for the whole command.

    An existing run is opened (its layout checked); a missing one is one line unless ``create``, and
    then a :class:`Run` not yet on disk, which :func:`resolve_run_config` creates once the config
    has passed its checks (a mistyped RUN creates nothing)."""
    if not create or (Path(run_dir) / MANIFEST).is_file():
        return Run.open(run_dir)
    return Run(Path(run_dir))


def resolve_run_config(
    run: Run | Path, config_file: Path | None = None, overrides: dict[str, Any] | None = None, *,
    create: bool = True, write: bool = True, stages: Iterable[str] = (), pipeline: bool = False,
    options: dict[str, str] | None = None,
) -> tuple[Run, RunConfig]:
    """The run and its resolved config; ``run.toml`` is written only after every check passed.

    ``run``: a run directory, or the :class:`Run` the command already opened with :func:`open_run`
    (a command that resolves its config twice, such as ``plan``, opens the run once).
    ``stages``: the stages the command is about to run, whose own checks must pass before the
    config is saved (``pipeline=True``: ``workbench run``, every stage of ``[pipeline] stages``). ``create=False`` requires an
    existing run directory; ``write=False`` leaves ``run.toml`` as it is (dry runs, estimates,
    status views) and takes no writer lock. A writing call holds the run's writer lock (one writer
    per run) before it reads the run's config.
    ``options``: setting (``"train.deepspeed"``) -> the option that gives it (``"--deepspeed"``); a bad
    value in ``overrides`` is one line naming its option, before the run is opened.
    """
    if overrides:
        given = {key: option for key, option in (options or {}).items()
                 if key.partition(".")[2] in ((overrides.get(key.partition(".")[0]) or {}))}
        parse_config(overrides, where="command-line options", options=given)
    if not isinstance(run, Run):
        run = open_run(run, create=create)
    existing = (run.root / MANIFEST).is_file()
    if not existing and not create:
        run = Run.open(run.root)  # one line: not a run directory
    if existing:
        if write:
            run.lock.hold()  # one writer per run: refuse before touching run.toml
        if not run.config_path.is_file():
            raise WorkbenchError(
                "missing: this run's settings are unknown (they are never guessed from defaults)",
                where=str(run.config_path),
                fix=f"restore it, e.g. copy the config the run was made with to {CONFIG} in the run directory")
        layers = read_toml(run.config_path)
        config = saved = parse_config(layers, where=str(run.config_path))
    else:
        saved = None  # created below, once the config has passed its checks
        layers = {"run": {"name": run.root.name}} if _is_name(run.root.name) else {}
        config = parse_config(layers, where=str(run.root))
    if config_file is not None:
        added = read_toml(config_file)
        parse_config(added, where=str(config_file))  # a mistake in the file is named by the file
        layers = merge_layers(layers, added)
        config = parse_config(layers, where=str(config_file))
    if overrides:
        layers = merge_layers(layers, overrides)
        config = parse_config(layers, where="command-line options", options=given)
    from_options = bool(((overrides or {}).get("run") or {}).keys() & {"languages", "quotas"})
    check_languages(config, "--languages" if from_options else str(config_file or run.config_path))
    if not write:
        return run, config
    check_stages(config, config.pipeline.stages if pipeline else stages, pipeline=pipeline, saved=saved)
    if not existing:
        run = Run.create(run.root)
        run.lock.hold()
    logs.attach(run.root)  # this command writes the run: its log records go to RUN/workbench.log
    atomic_write_bytes(run.config_path, config.to_toml().encode())
    return run, config


def _is_name(name: str) -> bool:
    """A folder name that is also a valid ``[run] name`` (a RUN such as ``.`` keeps the default)."""
    from workbench.config import check_single_component

    try:
        check_single_component(name, "")
    except ValueError:
        return False
    return True
