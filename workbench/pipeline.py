"""The whole pipeline from one config file: plan → generate → filter → audit → train → eval → report.

Each stage is the same public function the single-stage commands call. A stage is skipped when it
completed before with the same inputs: its config section and the manifest hashes of the tables it
reads (kept in ``pipeline.json`` in the run directory). Generation resumes from its request cache,
so a killed run re-run with the same command loses nothing and pays for nothing twice.

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

from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.languages import Registry
from workbench.run import Run, atomic_write_bytes

log = logging.getLogger(__name__)

STAGES = ("plan", "generate", "filter", "audit", "train", "eval", "report")
# The stages whose outputs each stage reads (its inputs for the skip decision).
UPSTREAM: dict[str, tuple[str, ...]] = {
    "plan": (),
    "generate": ("plan",),
    "filter": ("generate",),
    "audit": ("generate", "filter"),
    "train": ("filter",),
    "eval": ("train",),
    "report": ("eval", "audit"),
}
# The config sections each stage depends on.
SECTIONS: dict[str, tuple[str, ...]] = {
    "plan": ("run",),
    "generate": ("run", "generate"),
    "filter": ("filter",),
    "audit": ("filter",),
    "train": ("train",),
    "eval": ("eval", "pipeline"),
    "report": ("report",),
}


@dataclass
class StageOutcome:
    stage: str
    state: str  # ran | skipped | not selected
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


def _digest(run: Run, config: RunConfig, stage: str) -> str:
    manifest = run.manifest()["stages"]
    payload = {
        "config": {name: getattr(config, name).model_dump(mode="json") for name in SECTIONS[stage]},
        "inputs": {up: (manifest.get(up) or {}).get("outputs", {}) for up in UPSTREAM[stage]},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _load_digests(run: Run) -> dict[str, str]:
    path = run.root / "pipeline.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_digest(run: Run, stage: str, digest: str) -> None:
    digests = _load_digests(run)
    digests[stage] = digest
    atomic_write_bytes(run.root / "pipeline.json", json.dumps(digests, indent=2, sort_keys=True).encode())


def _outputs_intact(run: Run, entry: dict[str, Any]) -> bool:
    """Every table the stage recorded is still on disk with the recorded content hash.

    A deleted, truncated or corrupted output makes the stage run again (generation rebuilds its
    tables from the request cache without sending a request), instead of being skipped as current.
    """
    from workbench.run import file_sha256

    for rel, info in entry.get("outputs", {}).items():
        recorded = (info or {}).get("sha256")
        path = run.root / rel
        if recorded is not None and (not path.is_file() or file_sha256(path) != recorded):
            log.info("%s changed on disk since its stage ran; running the stage again", rel)
            return False
    return True


def _eval_systems(run: Run, config: RunConfig) -> list[tuple[str, str]]:
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


def _stage_functions(run: Run, config: RunConfig, registry: Registry,
                     on_stage: Callable[[str, str], None] | None = None,
                     generate_progress: Callable[[Any], None] | None = None) -> dict[str, Callable[[], Any]]:
    def plan():
        from workbench.plan import run_plan

        return run_plan(run, config, registry)

    def generate():
        from workbench.generate.engine import run_generate, unfinished_summary

        if config.generate.batch:  # the Batch API end to end: submit, poll, collect, next step
            from workbench.generate.batch import run_until_done

            result = run_until_done(run, config, registry,
                                    notify=(lambda line: on_stage("generate", line)) if on_stage else None)
        else:
            result = run_generate(run, config, registry, progress=generate_progress)
        entry = run.stage_entry("generate") or {}
        if entry.get("status") != "complete":
            raise WorkbenchError(
                f"generation is {entry.get('status', 'not complete')}: {unfinished_summary(result.stats)}",
                where=str(run.root),
                fix="re-run the same command to resume (finished requests are not sent again)",
            )
        return result

    def filter_():
        from workbench.filter.stage import run_filter

        return run_filter(run, config, registry)

    def audit():
        from workbench.audit import run_audit

        return run_audit(run, config, registry)

    def train():
        from workbench.train.trainer import run_train

        return run_train(run, config, registry, show_progress=True)

    def eval_():
        from workbench.eval.stage import run_eval

        results = []
        for system, model in _eval_systems(run, config):
            section = config.eval.model_copy(update={"model": model, "system": system, "bm25": False})
            results.append(run_eval(run, config.model_copy(update={"eval": section}), registry))
        return results

    def report():
        from workbench.report.build import run_report

        audit_path = run.stage_dir("audit") / "summary.parquet"
        return run_report(
            run.stage_dir("report"),
            [run.stage_dir("eval") / "results.parquet", *config.report.results],
            audit=config.report.audit or (audit_path if audit_path.is_file() else None),
            config=config.report,
            registry=registry,
            run=run,
        )

    return {"plan": plan, "generate": generate, "filter": filter_, "audit": audit, "train": train,
            "eval": eval_, "report": report}


def run_pipeline(
    run: Run,
    config: RunConfig,
    registry: Registry,
    *,
    on_stage: Callable[[str, str], None] | None = None,
    generate_progress: Callable[[Any], None] | None = None,
) -> list[StageOutcome]:
    """Run every selected stage in order, skipping those whose inputs and config are unchanged.

    ``generate_progress`` receives the generate engine's live counters (the CLI renders them).
    """
    with run.writer_lock():
        return _run_stages(run, config, registry, on_stage, generate_progress)


def _run_stages(run: Run, config: RunConfig, registry: Registry, on_stage: Callable[[str, str], None] | None,
                generate_progress: Callable[[Any], None] | None = None) -> list[StageOutcome]:
    functions = _stage_functions(run, config, registry, on_stage, generate_progress)
    outcomes: list[StageOutcome] = []
    for stage in STAGES:
        if stage not in config.pipeline.stages:
            outcomes.append(StageOutcome(stage, "not selected"))
            continue
        digest = _digest(run, config, stage)
        entry = run.stage_entry(stage) or {}
        if (_load_digests(run).get(stage) == digest and entry.get("status") == "complete"
                and _outputs_intact(run, entry)):
            outcomes.append(StageOutcome(stage, "skipped"))
            if on_stage:
                on_stage(stage, "skipped (current)")
            continue
        if on_stage:
            on_stage(stage, "running")
        start = time.perf_counter()
        functions[stage]()
        seconds = time.perf_counter() - start
        # inputs may have been rewritten by the stage itself (plan), so hash them after it ran
        _save_digest(run, stage, _digest(run, config, stage))
        outcomes.append(StageOutcome(stage, "ran", seconds))
        if on_stage:
            on_stage(stage, f"done in {seconds:.1f} s")
    return outcomes
