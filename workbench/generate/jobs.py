"""Building the generate stage's requests: one :class:`Job` per brainstorm round or planned slot.

Each job's ``max_tokens`` is sized per family, ``num_words`` and script
(:mod:`workbench.generate.budget`) and capped by what the endpoint allows; its cache key
(:func:`workbench.generate.cache.request_key`) makes a stored answer never asked for twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from workbench.config import GenerateSection
from workbench.families import FAMILIES
from workbench.generate import budget, prompts
from workbench.generate.cache import request_key
from workbench.generate.client import LLMClient
from workbench.languages import Registry

TaskLists = dict[tuple[str, str, int], list[str]]  # (language, family, seed) -> merged brainstormed tasks


@dataclass
class Job:
    """One request to make: a brainstorm for (language, family, seed) or one slot's example.

    It carries its language, family and seed, so nothing downstream parses them out of ids.
    """

    key: str
    slot_id: str
    kind: str  # "brainstorm" or "example"
    language: str
    family: str
    body: dict[str, Any]
    limit: int = 0  # the largest max_tokens the endpoint allows for this request (re-send after truncation)
    seed: int = 0  # the plan's seed of the slot (brainstorm: of its (language, family, seed) group)


@dataclass
class ExampleJobs:
    """Step 2's jobs, the task each slot uses, and the slots that cannot run."""

    jobs: list[Job] = field(default_factory=list)
    chosen: dict[str, str] = field(default_factory=dict)  # slot id -> task
    blocked: dict[str, str] = field(default_factory=dict)  # slot id -> why it cannot run
    blocked_groups: dict[str, tuple[str, str]] = field(default_factory=dict)  # blocked slot id -> (language, family)


@dataclass
class JobBuilder:
    """Turns plan rows (and brainstormed tasks) into jobs sized for this endpoint and model."""

    section: GenerateSection
    client: LLMClient
    registry: Registry
    plans: dict[str, pl.DataFrame]
    context_tokens: int | None = None  # the endpoint's context window, when known

    def __post_init__(self) -> None:
        self.token_table = budget.table_for(self.section.base_url == "local", self.section.tokens_per_word)

    def job(self, slot_id: str, kind: str, language: str, family: str, messages: list[dict[str, str]],
            wanted_tokens: int, seed: int) -> Job:
        """A request with ``max_tokens`` = ``wanted_tokens`` within the endpoint's limits."""
        limit = budget.cap(self.section.max_tokens_cap, max_tokens_cap=self.section.max_tokens_cap,
                           context_tokens=self.context_tokens, prompt_tokens=budget.prompt_tokens_upper(messages))
        max_tokens = min(wanted_tokens, limit)
        key = request_key(self.section.model, messages, self.client.params(max_tokens), slot_id)
        schema_kind = "brainstorm" if kind == "brainstorm" else family
        body = self.client.body(messages, max_tokens, schema_kind, prompts.json_schema(schema_kind))
        return Job(key, slot_id, kind, language, family, body, limit, seed)

    def brainstorm_jobs(self) -> list[Job]:
        """Enough rounds per (language, family) that no task serves more than ``max_task_uses`` slots.

        Round 0's slot id is ``<lang>:<family>:<seed>:brainstorm``, round k's adds ``:<k>``.
        """
        jobs = []
        for code, plan in self.plans.items():
            language = self.registry.get(code)
            for (family, seed), group in plan.group_by("family", "seed", maintain_order=True):
                if FAMILIES[family].brainstorm:
                    messages = prompts.brainstorm_messages(family, language)
                    for round_index in range(prompts.brainstorm_rounds(group.height, self.section.max_task_uses)):
                        slot_id = f"{code}:{family}:{seed}:brainstorm" + (f":{round_index}" if round_index else "")
                        jobs.append(self.job(slot_id, "brainstorm", code, family, messages,
                                             self.section.brainstorm_max_tokens, seed))
        return jobs

    def example_budget(self, row: dict[str, Any]) -> int:
        """``max_tokens`` wanted for one slot: ``generate.max_tokens`` if set, else sized (budget.py)."""
        if self.section.max_tokens is not None:
            return self.section.max_tokens
        target = self.registry.get(row["target_language"]) if row.get("target_language") else None
        return budget.completion_budget(row["family"], row, self.registry.get(row["language"]), target,
                                        self.token_table)

    def expected_tokens(self, row: dict[str, Any]) -> int:
        if self.section.est_completion_tokens is not None:
            return self.section.est_completion_tokens
        target = self.registry.get(row["target_language"]) if row.get("target_language") else None
        return budget.expected_completion_tokens(row["family"], row, self.registry.get(row["language"]), target,
                                                 self.token_table)

    def example_jobs(self, tasks: TaskLists | None,
                     brainstorm_errors: dict[tuple[str, str, int], str] | None = None, *,
                     placeholder_missing: bool = False) -> ExampleJobs:
        """Jobs per slot, the task each slot uses, and slots that cannot run (with the reason).

        ``tasks=None`` (a dry run) stands a placeholder in for each brainstormed task;
        ``placeholder_missing`` (a dry run of a run under way) only for groups not brainstormed yet.
        ``brainstorm_errors`` says why a (language, family, seed) has no tasks.
        """
        brainstorm_errors = brainstorm_errors or {}
        out = ExampleJobs()
        for code, plan in self.plans.items():
            dealt: dict[str, str] = {}
            if tasks is not None:
                for (family, seed), group in plan.group_by("family", "seed", maintain_order=True):
                    if FAMILIES[family].brainstorm and tasks.get((code, family, seed)):
                        dealt.update(prompts.assign_tasks(tasks[(code, family, seed)], group["slot_id"].to_list(), seed))
            for row in plan.iter_rows(named=True):
                family = row["family"]
                task = None
                if FAMILIES[family].brainstorm:
                    if tasks is None or (placeholder_missing and row["slot_id"] not in dealt):
                        task = "(a task from the brainstorm step)"
                    elif row["slot_id"] not in dealt:
                        why = brainstorm_errors.get((code, family, row["seed"]), "no answer")
                        out.blocked[row["slot_id"]] = f"brainstorm step failed for this language and family: {why}"
                        out.blocked_groups[row["slot_id"]] = (code, family)
                        continue
                    else:
                        task = dealt[row["slot_id"]]
                    out.chosen[row["slot_id"]] = task
                messages = prompts.example_messages(row, task, self.registry)
                out.jobs.append(self.job(row["slot_id"], "example", code, family, messages,
                                         self.example_budget(row), row["seed"]))
        return out
