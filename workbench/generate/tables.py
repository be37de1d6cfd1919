"""Writing the generate stage's tables from the request cache: ``tasks/`` and ``generated/``.

``generated/<lang>.parquet`` holds exactly one row per planned slot: ``ok`` with the answer's
fields, or ``failed`` with ``error`` saying why (blocked by a failed brainstorm, never sent, or
the cache's last error) — nothing is dropped.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import polars as pl

from workbench.families import EXAMPLE_FIELDS, FAMILIES, PLACEHOLDER_COLUMNS
from workbench.generate import prompts
from workbench.generate.cache import FINISHED, RequestCache
from workbench.generate.jobs import ExampleJobs, Job, TaskLists
from workbench.run import Folder, Run
from workbench.tables import GENERATED, TASKS


def write_tasks(run: Run, cache: RequestCache, plans: dict[str, pl.DataFrame], jobs: list[Job],
                model: str) -> tuple[TaskLists, dict[tuple[str, str, int], str]]:
    """Merge each (language, family, seed)'s brainstorm rounds (duplicates dropped) into tasks/.

    Returns the merged task lists and, for each group left without tasks, why.
    """
    tasks, errors = brainstormed_tasks(cache, jobs)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (code, family, seed), merged in tasks.items():
        for index, task in enumerate(merged):
            rows[code].append({"language": code, "family": family, "seed": seed, "task_index": index,
                               "task": task, "model": model})
    for code in plans:
        run.write_table(Folder.TASKS, code, pl.DataFrame(rows.get(code, []), schema=TASKS), TASKS)
    return tasks, errors


def brainstormed_tasks(cache: RequestCache, jobs: list[Job]) -> tuple[TaskLists, dict[tuple[str, str, int], str]]:
    """The merged task list of every (language, family, seed) whose brainstorm rounds are all
    final in the cache (at least one answered), and why each other group has none yet."""
    entries = cache.get_many([job.key for job in jobs])
    rounds: dict[tuple[str, str, int], list[list[str]]] = defaultdict(list)
    unfinished: set[tuple[str, str, int]] = set()
    errors: dict[tuple[str, str, int], str] = {}
    for job in jobs:
        entry = entries.get(job.key)
        group = (job.language, job.family, job.seed)
        if entry is None or entry.status not in FINISHED:
            unfinished.add(group)  # the task list must not change later: wait for every round
        if entry is None or entry.status != "ok":
            errors.setdefault(group, entry.error if entry else "not sent")
            continue
        rounds[group].append(entry.result["tasks"])
    # a group goes on once every round is final and at least one answered
    tasks = {group: prompts.merge_tasks(lists) for group, lists in rounds.items() if group not in unfinished}
    for group in tasks:
        errors.pop(group, None)
    return tasks, errors


def write_generated(run: Run, cache: RequestCache, plans: dict[str, pl.DataFrame], examples: ExampleJobs,
                    model: str, *, budget_hit: bool) -> dict[str, int]:
    """One GENERATED row per planned slot; returns rows written per table."""
    entries = cache.get_many([job.key for job in examples.jobs])
    by_slot = {job.slot_id: entries.get(job.key) for job in examples.jobs}
    chosen, blocked = examples.chosen, examples.blocked
    outputs = {}
    for code, plan in plans.items():
        rows = []
        for slot in plan.iter_rows(named=True):
            entry = by_slot.get(slot["slot_id"])
            row: dict[str, Any] = {c: slot[c] for c in ("slot_id", "language", "family", *PLACEHOLDER_COLUMNS)}
            row.update(dict.fromkeys(EXAMPLE_FIELDS))
            row["task"] = chosen.get(slot["slot_id"])
            row["model"] = model
            if entry is not None and entry.status == "ok":
                row.update({name: entry.result.get(name) for name in FAMILIES[slot["family"]].fields})
                row.update(status="ok", error=None)
            elif slot["slot_id"] in blocked:
                row.update(status="failed", error=blocked[slot["slot_id"]])
            elif entry is None:
                reason = "--max-cost reached before this slot was sent" if budget_hit else "not sent"
                row.update(status="failed", error=f"not run: {reason}; re-run to resume")
            else:
                row.update(status="failed", error=entry.error or entry.status)
            row.update(
                raw_response=entry.raw_response if entry else None,
                prompt_tokens=entry.prompt_tokens if entry else 0,
                completion_tokens=entry.completion_tokens if entry else 0,
                cost_usd=entry.cost_usd if entry else 0.0,
                attempts=entry.attempts if entry else 0,
                created_at=entry.updated_at if entry else None,
            )
            rows.append(row)
        path = run.write_table(Folder.GENERATED, code, pl.DataFrame(rows, schema=GENERATED), GENERATED)
        outputs[run.relative(path)] = len(rows)
    return outputs
