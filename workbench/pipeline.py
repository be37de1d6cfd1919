"""The runner: the whole pipeline from one config file, plan → generate → filter → audit → train → eval → report.

The stages are declared once, in :mod:`workbench.stages`; this module runs them in that order
under the run's writer lock, times them, and owns the skip decision. Each stage calls the same
public function the single-stage command calls (which records the stage in the manifest). A stage
is skipped when it completed before with the same inputs: the config sections it declares and the
manifest hashes of the tables of the stages it reads (kept in ``pipeline.json`` in the run
directory). Generation resumes from its request cache,
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
from dataclasses import dataclass
from typing import Any

from workbench.config import RunConfig
from workbench.languages import Registry
from workbench.run import Run, atomic_write_bytes
from workbench.stages import BY_NAME, STAGES, StageCall

log = logging.getLogger(__name__)


@dataclass
class StageOutcome:
    stage: str
    state: str  # ran | skipped | not selected
    seconds: float = 0.0


def _digest(run: Run, config: RunConfig, stage: str) -> str:
    manifest = run.manifest()["stages"]
    payload = {
        "config": {name: getattr(config, name).model_dump(mode="json") for name in BY_NAME[stage].sections},
        "inputs": {up: (manifest.get(up) or {}).get("outputs", {}) for up in BY_NAME[stage].reads},
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
    call = StageCall(run, config, registry, on_stage, generate_progress)
    outcomes: list[StageOutcome] = []
    for declared in STAGES:
        stage = declared.name
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
        declared.call(call)
        seconds = time.perf_counter() - start
        # inputs may have been rewritten by the stage itself (plan), so hash them after it ran
        _save_digest(run, stage, _digest(run, config, stage))
        outcomes.append(StageOutcome(stage, "ran", seconds))
        if on_stage:
            on_stage(stage, f"done in {seconds:.1f} s")
    return outcomes
