"""The runner: every stage runs through here, alone (``workbench filter RUN``) or as the pipeline
(``workbench run``, plan → generate → filter → audit → train → eval → report).

A stage is a :class:`Stage` object declared in its own module (``FILTER`` in
:mod:`workbench.filter.stage`, ...); :mod:`workbench.stages` lists them in pipeline order and
:mod:`workbench.pipeline` runs that list. For one stage the runner

* holds the run's writer lock (``run.lock``, one writer per run directory; :mod:`workbench.locks`);
* decides whether the stage is current: its manifest entry is ``complete``, was recorded with the
  same digest (the config sections the stage declares, the recorded outputs of the stages it reads,
  the language files and the files outside the run when it declares them, and the call's options),
  and every output it recorded is still on disk with its sha256. A current stage is not run again
  and rewrites nothing;
* otherwise records the stage ``running``, calls its body with its :class:`StageInput` and the
  config sections it declares (typed, in declared order; nothing else of the config), times it, and records what the body returned (status, outputs with rows and sha256,
  stats) in ``manifest.json``. A body that stops with a :class:`WorkbenchError` leaves the stage
  recorded ``partial`` with the error line (resumable); an interrupted one stays ``running``, which
  ``workbench status`` shows as interrupted once no process holds the run. While the body runs,
  log records and warnings go to ``logs/<stage>.log`` (:mod:`workbench.stagelog`); library
  warnings only there, their count in the stage's stats (``logged``).

Stage bodies never write the manifest; the public stage functions (``run_plan``, ``run_filter``, ...)
are this module's :func:`run_stage` for their stage.

Adding a stage: write ``<stage>.py`` (or ``<stage>/stage.py``) with its body, a public
``run_<stage>(run, config, registry)`` that calls :func:`run_stage`, and one :class:`Stage` object,
then list that object in :mod:`workbench.stages`, in pipeline order.

Example::

    workbench run examples/quickstart.toml            # -> runs/quickstart/
    workbench status runs/quickstart
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import RunConfig, Section
from workbench.errors import WorkbenchError
from workbench.languages import Registry
from workbench.run import Folder, Run, StageResult, file_sha256, now
from workbench.stagelog import stage_log

log = logging.getLogger(__name__)

VIA_PIPELINE = "workbench run"  # recorded as ``via`` so ``status`` names the command that resumes a stage


@dataclass
class StageInput:
    """What the runner hands a stage body, besides the config sections its stage declares."""

    stage: str
    run: Run
    registry: Registry
    options: dict[str, Any] = field(default_factory=dict)  # the call's own settings (part of the digest)
    # the CLI's live view (generate: counters; filter: done, total; train, eval: workbench.progress states)
    progress: Callable[..., None] | None = None
    notify: Callable[[str], None] | None = None  # one state line for the CLI (e.g. batch polling)


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, declared in its own module and listed in :mod:`workbench.stages`.

    ``body(inputs, *sections)`` does the work: it gets a :class:`StageInput` and the config
    sections named in ``sections`` (section classes of :mod:`workbench.config`, in that order), and
    nothing else of the config, so the skip digest, which hashes exactly those sections, cannot
    miss a setting the stage uses. It returns a :class:`~workbench.run.StageResult` and never
    writes the manifest.
    """

    name: str
    reads: tuple[str, ...]  # stages whose recorded outputs this stage reads (they join its digest)
    sections: tuple[type[Section], ...]  # config sections it uses (they join its digest; its body gets them)
    body: Callable[..., StageResult]
    writes: tuple[Folder, ...]  # the run directory's folders it leaves its outputs in
    languages: bool = False  # the language files shape its outputs (their content joins its digest)
    # (*sections) -> paths: files and folders outside the run the stage reads (the filter's LID models,
    # train's base model and DeepSpeed JSON, eval's data folders and models, report's extra tables);
    # the runner puts their state in the digest
    outside: Callable[..., list[str]] | None = None
    # (RunConfig, pipeline) -> None: the stage's own checks of its settings (model and data folders
    # exist, ...), run before run.toml records them (workbench/checks.py)
    check: Callable[[RunConfig, bool], None] | None = None

    def __post_init__(self) -> None:
        # a folder name typed as text would pass silently and name no folder of the run
        if not isinstance(self.writes, tuple) or not all(isinstance(folder, Folder) for folder in self.writes):
            raise TypeError(f"Stage '{self.name}': field 'writes' must be a tuple of workbench.run.Folder members, "
                            f"not {self.writes!r} (write (Folder.ACCEPTED, Folder.REJECTED), not 'accepted/')")

    @property
    def section_names(self) -> tuple[str, ...]:
        """The ``RunConfig`` fields of the declared sections (``[filter]`` -> ``filter``)."""
        return tuple(_FIELD_OF_SECTION[section] for section in self.sections)

    def sections_of(self, config: RunConfig) -> tuple[Section, ...]:
        """The declared sections of ``config``, in declared order: what the body and ``outside`` get."""
        return tuple(getattr(config, name) for name in self.section_names)


# each section class is the type of one RunConfig field
_FIELD_OF_SECTION: dict[type, str] = {info.annotation: name for name, info in RunConfig.model_fields.items()
                                       if isinstance(info.annotation, type)}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def stage_digest(run: Run, config: RunConfig, registry: Registry | None, declared: Stage,
                 options: dict[str, Any] | None = None) -> str:
    """What a stage's outputs depend on, hashed: its declared config sections, the outputs of the
    stages it reads (as they are on disk now), the language files (when it declares them), the
    files outside the run it reads (when it declares them) and the call's options."""
    manifest = run.manifest()["stages"]
    payload = {
        "config": {name: getattr(config, name).model_dump(mode="json") for name in declared.section_names},
        "inputs": {up: _on_disk((manifest.get(up) or {}).get("outputs", {}), run) for up in declared.reads},
        "languages": registry.fingerprint() if declared.languages and registry is not None else None,
        "options": _jsonable(options or {}),
        "outside": _outside(declared, config),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# Files outside the run up to this size join a digest by content, larger ones (models) by size and mtime.
OUTSIDE_HASH_LIMIT = 64 << 20


def _outside_state(path: Path) -> Any:
    """How a file or folder outside the run stands now: a file's sha256 (size and mtime when larger
    than OUTSIDE_HASH_LIMIT), a folder's files with their size and mtime (a model or a corpus is not
    hashed byte by byte); None if absent."""
    if path.is_file():
        stat = path.stat()
        return file_sha256(path) if stat.st_size <= OUTSIDE_HASH_LIMIT else [stat.st_size, stat.st_mtime_ns]
    if path.is_dir():
        return {str(f.relative_to(path)): [f.stat().st_size, f.stat().st_mtime_ns]
                for f in sorted(path.rglob("*")) if f.is_file()}
    return None


def _outside(declared: Stage, config: RunConfig) -> dict[str, Any] | None:
    """The state of every file outside the run the stage declares it reads (``Stage.outside``)."""
    if declared.outside is None:
        return None
    paths = declared.outside(*declared.sections_of(config))
    return {p: _outside_state(Path(p)) for p in sorted(set(paths))}


def _on_disk(outputs: dict[str, Any], run: Run) -> dict[str, str | None]:
    """The sha256 of each recorded output as it is now on disk (an edited input changes the digest)."""
    return {rel: file_sha256(run.root / rel) if (run.root / rel).is_file() else None for rel in sorted(outputs)}


def outputs_intact(run: Run, entry: dict[str, Any]) -> bool:
    """Every output the stage recorded is still on disk with the recorded content hash.

    A deleted, truncated or corrupted output makes the stage run again (generation rebuilds its
    tables from the request cache without sending a request), instead of being skipped as current.
    """
    for rel, info in entry.get("outputs", {}).items():
        recorded = (info or {}).get("sha256")
        path = run.root / rel
        if recorded is not None and (not path.is_file() or file_sha256(path) != recorded):
            log.info("%s changed on disk since its stage ran; running the stage again", rel)
            return False
    return True


def _recorded_rows(entry: dict[str, Any]) -> dict[str, int]:
    """The outputs a manifest entry records, with their rows."""
    return {rel: (info or {}).get("rows") or 0 for rel, info in entry.get("outputs", {}).items()}


def _recorded_result(stage: str, entry: dict[str, Any]) -> StageResult:
    return StageResult(stage, outputs=_recorded_rows(entry), stats=entry.get("stats", {}), current=True)


def run_stage(run: Run, declared: Stage, config: RunConfig, registry: Registry, *,
              options: dict[str, Any] | None = None, progress: Callable[..., None] | None = None,
              notify: Callable[[str], None] | None = None, force: bool = False,
              via: str | None = None) -> StageResult:
    """Run one declared stage over ``run`` unless it is current (see the module docstring).

    ``options`` are the call's own settings (they join the digest: e.g. which systems eval runs);
    ``progress`` (the stage's live state) and ``notify`` (state lines, "running" first when the stage
    runs) are the CLI's hooks; ``force`` runs a current stage again; ``via`` is recorded so ``status`` can
    name the command that resumes the stage.
    """
    stage = declared.name
    recording = not run.lock.follower  # torchrun ranks > 0 belong to rank 0's job, which records it
    with run.lock.writer():
        digest = stage_digest(run, config, registry, declared, options)
        entry = run.stage_entry(stage) or {}
        if (not force and entry.get("status") == "complete" and entry.get("config_hash") == digest
                and outputs_intact(run, entry)):
            log.info("%s is current; nothing rewritten", stage)
            return _recorded_result(stage, entry)
        started = now()
        start = time.perf_counter()
        if recording:
            run.record_stage(stage, status="running", config_hash=digest, started_at=started, via=via)
        if notify:
            notify("running")
        inputs = StageInput(stage=stage, run=run, registry=registry, options=dict(options or {}),
                            progress=progress, notify=notify)
        try:
            with stage_log(run.root, stage) as logged:  # library warnings to logs/<stage>.log, not the console
                result = declared.body(inputs, *declared.sections_of(config))
        except WorkbenchError as err:
            if recording:  # stopped, not crashed: resumable, and the line says why; what an earlier run
                # recorded (its outputs, hashed as they are now, and its stats) stays in the entry
                try:
                    run.record_stage(stage, status="partial", config_hash=digest, started_at=started,
                                     outputs=_recorded_rows(entry), stats={**entry.get("stats", {}), "stopped_by": err.line()},
                                     via=via)
                except WorkbenchError:
                    pass  # the manifest cannot be written either (a full disk): the first error is the one to read
            raise
        result.stats.setdefault("seconds", round(time.perf_counter() - start, 3))
        result.stats["logged"] = logged.summary()
        if recording:
            run.record_stage(stage, status=result.status, config_hash=digest, outputs=result.outputs,
                             stats=result.stats, started_at=started, via=via)
        return result
