"""The runner: every stage runs through here, alone (``workbench filter RUN``) or as the pipeline
(``workbench run``, plan → generate → filter → audit → train → eval → report).

The stages are declared once, in :mod:`workbench.stages`. For one stage the runner

* holds the run's writer lock (``run.lock``, one writer per run directory; :mod:`workbench.locks`);
* decides whether the stage is current: its manifest entry is ``complete``, was recorded with the
  same digest (the config sections the stage declares, the recorded outputs of the stages it reads,
  the language files and the files outside the run when it declares them, and the call's options),
  and every output it recorded is still on disk with its sha256. A current stage is not run again
  and rewrites nothing;
* otherwise records the stage ``running``, calls its body with only the config sections it
  declared, times it, and records what the body returned (status, outputs with rows and sha256,
  stats) in ``manifest.json``. A body that stops with a :class:`WorkbenchError` leaves the stage
  recorded ``partial`` with the error line (resumable); an interrupted one stays ``running``, which
  ``workbench status`` shows as interrupted once no process holds the run. While the body runs,
  log records and warnings go to ``logs/<stage>.log`` (:mod:`workbench.stagelog`); library
  warnings only there, their count in the stage's stats (``logged``).

Stage bodies never write the manifest; the public stage functions (``run_plan``, ``run_filter``, ...)
are this module's :func:`run_stage` for their stage.

Example::

    workbench run examples/quickstart.toml            # -> runs/quickstart/
    workbench status runs/quickstart
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.languages import Registry
from workbench.run import Run, StageResult, file_sha256, now
from workbench.stagelog import logged_note, stage_log
from workbench.stages import BY_NAME, STAGES, DeclaredConfig, Stage, StageInput

log = logging.getLogger(__name__)

VIA_PIPELINE = "workbench run"


@dataclass
class StageOutcome:
    stage: str
    state: str  # ran | skipped | not selected
    seconds: float = 0.0


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def stage_digest(run: Run, config: RunConfig, registry: Registry | None, stage: str,
                 options: dict[str, Any] | None = None) -> str:
    """What a stage's outputs depend on, hashed: its declared config sections, the outputs of the
    stages it reads (as they are on disk now), the language files (when it declares them), the
    files outside the run it reads (when it declares them) and the call's options."""
    declared = BY_NAME[stage]
    manifest = run.manifest()["stages"]
    payload = {
        "config": {name: getattr(config, name).model_dump(mode="json") for name in declared.sections},
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
    paths = _call(declared.outside, DeclaredConfig(config, declared))
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


def _call(where: str, *args: Any) -> Any:
    module, _, function = where.partition(":")
    return getattr(importlib.import_module(module), function)(*args)


def run_stage(run: Run, stage: str, config: RunConfig, registry: Registry, *,
              options: dict[str, Any] | None = None, progress: Callable[..., None] | None = None,
              notify: Callable[[str], None] | None = None, force: bool = False,
              via: str | None = None) -> StageResult:
    """Run one declared stage over ``run`` unless it is current (see the module docstring).

    ``options`` are the call's own settings (they join the digest: e.g. which systems eval runs);
    ``progress`` (the stage's live state) and ``notify`` (state lines, "running" first when the stage
    runs) are the CLI's hooks; ``force`` runs a current stage again; ``via`` is recorded so ``status`` can
    name the command that resumes the stage.
    """
    declared = BY_NAME[stage]
    recording = not run.lock.follower  # torchrun ranks > 0 belong to rank 0's job, which records it
    with run.lock.writer():
        digest = stage_digest(run, config, registry, stage, options)
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
        inputs = StageInput(stage=stage, run=run, config=DeclaredConfig(config, declared), registry=registry,
                            options=dict(options or {}), progress=progress, notify=notify)
        try:
            with stage_log(run.root, stage) as logged:  # library warnings to logs/<stage>.log, not the console
                result = _call(declared.body, inputs)
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


def run_pipeline(
    run: Run,
    config: RunConfig,
    registry: Registry,
    *,
    on_stage: Callable[[str, str], None] | None = None,
    progress: dict[str, Callable[[Any], None]] | None = None,
) -> list[StageOutcome]:
    """Run every selected stage in declaration order; current stages are skipped. A stage that ends
    short of complete (generation with requests still unanswered) stops the pipeline with one line.

    ``on_stage(stage, state line)`` and ``progress`` (per stage, the view its live state goes to:
    generate's counters, train's steps, eval's texts) are the CLI's hooks.
    """
    outcomes: list[StageOutcome] = []
    with run.lock.writer():
        for declared in STAGES:
            stage = declared.name
            if stage not in config.pipeline.stages:
                outcomes.append(StageOutcome(stage, "not selected"))
                continue
            start = time.perf_counter()
            notify = (lambda line, stage=stage: on_stage(stage, line)) if on_stage else None
            result = run_stage(run, stage, config, registry,
                               progress=(progress or {}).get(stage), notify=notify, via=VIA_PIPELINE)
            seconds = time.perf_counter() - start
            if result.current:
                outcomes.append(StageOutcome(stage, "skipped"))
                if on_stage:
                    on_stage(stage, "skipped (current)")
                continue
            if result.status != "complete":
                raise WorkbenchError(
                    f"{stage} is {result.status}: {result.stats.get('incomplete') or 'see workbench status'}",
                    where=str(run.root),
                    fix="re-run the same command to resume (finished work is not done again)")
            outcomes.append(StageOutcome(stage, "ran", seconds))
            if on_stage:
                note = logged_note(result.stats, run.root)
                on_stage(stage, f"done in {seconds:.1f} s" + (f"; {note}" if note else ""))
    return outcomes
