"""Generate stage: plan rows -> brainstormed tasks -> one JSON example per slot.

Input: ``plan/<lang>.parquet`` (PLAN) and the ``[generate]`` section of the run config.
Output:
- ``tasks/<lang>.parquet`` (TASKS): the brainstormed task list per (language, family, seed);
- ``generated/<lang>.parquet`` (GENERATED): exactly one row per planned slot, ``status`` ok or
  failed (``error`` says why, ``raw_response`` keeps the model's text), usage and cost;
- ``cache.sqlite``: every request and answer (:mod:`workbench.generate.cache`), the resume point.

Step 1 brainstorms tasks per (language, family) for the four two-step families, in as many
rounds of ~20 as keep each task to at most ``max_task_uses`` examples (merged, duplicates
dropped); step 2 sends one request per slot, the tasks dealt to slots by a seeded shuffle. Each
request's ``max_tokens`` is sized per family, ``num_words`` and script
(:mod:`workbench.generate.budget`). A request whose answer is stored is never sent again:
re-running after a crash or ``kill -9`` sends only what was unfinished. Invalid answers are
re-sampled up to ``max_attempts`` times, then recorded as failed. An answer cut at ``max_tokens``
(``finish_reason == "length"``) is not an invalid answer: it is re-sent once with twice the
budget, and if cut again the slot is recorded failed with an error starting ``truncated``.

Example::

    workbench generate runs/demo --base-url https://api.openai.com/v1 --model gpt-4o-mini --concurrency 32
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from workbench.config import GenerateSection, RunConfig
from workbench.errors import WorkbenchError
from workbench.families import EXAMPLE_FIELDS, FAMILIES, PLACEHOLDER_COLUMNS
from workbench.generate import budget, prompts
from workbench.generate.budget import truncation_error
from workbench.generate.cache import FINISHED, RequestCache, request_key
from workbench.generate.client import EndpointError, LLMClient, RetriesExhausted, resolve_mode
from workbench.generate.pricing import Pricer
from workbench.languages import Registry
from workbench.run import Run, StageResult, now
from workbench.tables import GENERATED, PLAN, TASKS

STAGE = "generate"
log = logging.getLogger(__name__)


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
class Progress:
    """Live counters the CLI renders; the engine updates them as answers arrive."""

    planned: Counter = field(default_factory=Counter)  # language -> slots
    done: Counter = field(default_factory=Counter)  # language -> finished slots (ok or failed)
    ok: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    cached: int = 0
    sent: int = 0
    invalid: int = 0
    truncated: Counter = field(default_factory=Counter)  # family (or "brainstorm") -> answers cut at max_tokens
    errors: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    phase: str = ""
    started: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        return self.sent / max(1e-9, time.monotonic() - self.started)


ProgressCallback = Callable[[Progress], None]


def run_generate(run: Run, config: RunConfig, registry: Registry, *, dry_run: bool = False, batch: bool = False,
                 retry_failed: bool = False, progress: ProgressCallback | None = None,
                 base_url: str | None = None) -> StageResult:
    """Run (or resume) generation for every planned language; see the module docstring.

    ``base_url`` overrides the config's. With ``base_url = "local"`` (and no override) this call
    starts the embedded llama.cpp server and runs again against its URL. With ``batch=True`` requests go through the Batch API
    (:mod:`workbench.generate.batch`) and the call returns after submitting or collecting.
    """
    section = config.generate
    plans = _read_plans(run)
    local = section.base_url == "local"
    url = base_url or section.base_url
    if url == "local" and not dry_run:
        from workbench.generate.local import serve_local

        with serve_local() as local_url:
            return run_generate(run, config, registry, dry_run=dry_run, batch=batch, retry_failed=retry_failed,
                                progress=progress, base_url=local_url)
    mode = resolve_mode(section.structured_output, url, local)
    state = Progress()
    for code, plan in plans.items():
        state.planned[code] = plan.height
    pricer = Pricer(section, batch)
    client = LLMClient(
        base_url=url, model=section.model, api_key=os.environ.get(section.api_key_env, ""),
        timeout_s=section.timeout_s, max_retries=section.max_retries, backoff_base_s=section.backoff_base_s,
        backoff_max_s=section.backoff_max_s, mode=mode, concurrency=1 if local else section.concurrency,
        requests_per_minute=section.requests_per_minute, tokens_per_minute=section.tokens_per_minute,
        temperature=section.temperature, top_p=section.top_p, rng=random.Random(f"{config.run.seed}:backoff"),
    )
    cache = RequestCache(run.cache_path)
    started_at = now()
    try:
        context = _Context(run, config, registry, plans, client, cache, state, pricer, progress,
                           concurrency=1 if local else section.concurrency, retry_failed=retry_failed)
        if dry_run:
            return context.dry_run()
        if batch:
            from workbench.generate.batch import BatchRunner

            context.runner = BatchRunner(context)
        return asyncio.run(context.run_all(started_at))
    finally:
        cache.close()


def _read_plans(run: Run) -> dict[str, pl.DataFrame]:
    codes = run.table_languages("plan")
    if not codes:
        raise WorkbenchError("no plan tables", where=str(run.stage_dir("plan")), fix="run 'workbench plan RUN' first")
    return {code: run.read_table("plan", code, PLAN) for code in codes}


class _Context:
    """One generate invocation: builds jobs, runs them (directly or via batch), writes tables."""

    def __init__(self, run, config, registry, plans, client, cache, state, pricer, progress, *, concurrency,
                 retry_failed):
        self.run, self.config, self.registry, self.plans = run, config, registry, plans
        self.section: GenerateSection = config.generate
        self.client: LLMClient = client
        self.cache: RequestCache = cache
        self.state: Progress = state
        self.pricer: Pricer = pricer
        self.progress = progress
        self.concurrency = concurrency
        self.retry_failed = retry_failed
        self.runner: Any = None  # BatchRunner in batch mode
        self.budget_hit = False
        self.brainstorm_errors: dict[tuple[str, str, int], str] = {}
        self.blocked_groups: dict[str, tuple[str, str]] = {}  # blocked slot id -> (language, family)
        # "auto" on a remote endpoint: probe once per (endpoint, model), remember it in the cache
        self.detect = self.section.structured_output == "auto" and self.section.base_url != "local"
        if self.detect and cache.meta(self.mode_key()):
            client.mode = cache.meta(self.mode_key())
        self.spent_before = cache.total_cost()  # --max-cost caps the run's total, across invocations
        self.context_tokens = self.section.context_tokens or (
            _local_context_tokens() if self.section.base_url == "local" else None)
        self.token_table = budget.table_for(self.section.base_url == "local", self.section.tokens_per_word)

    def mode_key(self) -> str:
        return f"structured_output:{self.client.base_url}:{self.section.model}"

    # -- jobs ------------------------------------------------------------------------------
    def _job(self, slot_id: str, kind: str, language: str, family: str, messages: list[dict[str, str]],
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
                        jobs.append(self._job(slot_id, "brainstorm", code, family, messages,
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

    def example_jobs(self, tasks: dict[tuple[str, str, int], list[str]] | None) -> tuple[list[Job], dict[str, str], dict[str, str]]:
        """Jobs per slot, the task each slot uses, and slots that cannot run (with the reason).

        The (language, family) of each blocked slot goes to ``self.blocked_groups``.
        """
        jobs, chosen, blocked = [], {}, {}
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
                    if tasks is None:
                        task = "(a task from the brainstorm step)"
                    elif row["slot_id"] not in dealt:
                        why = self.brainstorm_errors.get((code, family, row["seed"]), "no answer")
                        blocked[row["slot_id"]] = f"brainstorm step failed for this language and family: {why}"
                        self.blocked_groups[row["slot_id"]] = (code, family)
                        continue
                    else:
                        task = dealt[row["slot_id"]]
                    chosen[row["slot_id"]] = task
                messages = prompts.example_messages(row, task, self.registry)
                jobs.append(self._job(row["slot_id"], "example", code, family, messages, self.example_budget(row),
                                      row["seed"]))
        return jobs, chosen, blocked

    # -- running ---------------------------------------------------------------------------
    def pending(self, jobs: list[Job]) -> list[Job]:
        entries = self.cache.get_many([job.key for job in jobs])
        todo = []
        for job in jobs:
            entry = entries.get(job.key)
            finished = entry is not None and (entry.status == "ok" or (entry.status == "failed" and not self.retry_failed))
            if finished:
                self.state.cached += 1
                if job.kind == "example":
                    self._count_slot(job.language, entry.status)
            elif entry is not None and entry.status == "submitted":
                continue  # an open Batch API job holds it
            else:
                todo.append(job)
        return todo

    def _count_slot(self, language: str, status: str) -> None:
        self.state.done[language] += 1
        (self.state.ok if status == "ok" else self.state.failed)[language] += 1

    async def execute(self, jobs: list[Job]) -> None:
        """Send every job with at most ``concurrency`` in flight; stops early at --max-cost."""
        iterator = iter(jobs)
        fatal: list[BaseException] = []

        async def worker(lane: int) -> None:
            for job in iterator:
                if fatal:
                    return
                if self.section.max_cost_usd is not None and (
                        self.spent_before + self.state.cost_usd >= self.section.max_cost_usd):
                    self.budget_hit = True
                    return
                try:
                    await self._run_job(job, lane)
                except EndpointError as err:
                    fatal.append(err)
                    return

        workers = [asyncio.create_task(worker(lane)) for lane in range(min(self.concurrency, max(1, len(jobs))))]
        await asyncio.gather(*workers)
        if fatal:
            raise fatal[0]

    async def _run_job(self, job: Job, lane: int = 0) -> None:
        kind = "brainstorm" if job.kind == "brainstorm" else job.family
        prompt_tokens = completion_tokens = 0
        latency = 0.0
        raw: str | None = None
        error = None
        attempts = 0
        samples_left = self.section.max_attempts
        resent_larger = False
        while samples_left > 0:
            attempts += 1
            try:
                reply = await self.client.chat(job.body, job.key, lane)
            except RetriesExhausted as err:
                self.record(job, "error", raw, None, str(err), prompt_tokens, completion_tokens, latency, attempts)
                self.client.errors["gave_up"] += 1
                self._notify()
                return
            self.state.sent = self.client.sent
            prompt_tokens += reply.prompt_tokens
            completion_tokens += reply.completion_tokens
            latency += reply.latency_s
            self._spend(reply.prompt_tokens, reply.completion_tokens)
            raw = reply.text
            if reply.finish_reason == "length":
                # cut at max_tokens: not the model's fault, so not an invalid sample; one re-send
                self.state.truncated[kind] += 1
                used = job.body["max_tokens"]
                larger = None if resent_larger else budget.larger_budget(used, job.limit)
                if larger is None:
                    why = ("again after one re-send with a larger budget" if resent_larger
                           else f"and {used} is the most the endpoint allows (generate.max_tokens_cap, context)")
                    self.record(job, "failed", raw, None, truncation_error(used, why), prompt_tokens,
                                 completion_tokens, latency, attempts)
                    return
                job.body = {**job.body, "max_tokens": larger}
                resent_larger = True
                continue
            samples_left -= 1
            try:
                result = prompts.parse_answer(kind, reply.text)
            except prompts.InvalidAnswer as err:
                error = f"invalid answer: {err}"
                self.state.invalid += 1
                continue
            self.record(job, "ok", raw, result, None, prompt_tokens, completion_tokens, latency, attempts)
            return
        self.record(job, "failed", raw, None, error, prompt_tokens, completion_tokens, latency, attempts)

    def _spend(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.state.prompt_tokens += prompt_tokens
        self.state.completion_tokens += completion_tokens
        self.state.cost_usd += self.pricer.cost(prompt_tokens, completion_tokens)

    def record(self, job: Job, status: str, raw, result, error, prompt_tokens, completion_tokens, latency, attempts,
                batch_id: str | None = None) -> None:
        self.cache.record(
            job.key, slot_id=job.slot_id, kind=job.kind, language=job.language, family=job.family,
            model=self.section.model, request=job.body, status=status, raw_response=raw, result=result, error=error,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            cost_usd=self.pricer.cost(prompt_tokens, completion_tokens), latency_s=latency, attempts=attempts,
            batch_id=batch_id)
        if job.kind == "example" and status in FINISHED:
            self._count_slot(job.language, status)
        self._notify()

    def _notify(self) -> None:
        self.state.errors = self.client.errors
        self.state.sent = self.client.sent
        if self.progress is not None:
            self.progress(self.state)

    async def _phase(self, name: str, jobs: list[Job]) -> bool:
        """Run one phase's unfinished jobs; True when every job of the phase is finished now."""
        self.state.phase = name
        todo = self.pending(jobs)
        self._notify()
        if self.runner is not None:
            return await self.runner.phase(name, todo)
        if todo:
            await self.execute(todo)
        return not self.pending_quiet(jobs)

    def pending_quiet(self, jobs: list[Job]) -> list[Job]:
        entries = self.cache.get_many([job.key for job in jobs])
        return [j for j in jobs if entries.get(j.key) is None or entries[j.key].status not in FINISHED]

    async def run_all(self, started_at: str) -> StageResult:
        section = self.section
        try:
            await self.client.preflight()  # a wrong endpoint fails here, before the stage is marked running
            self.run.record_stage(STAGE, status="running", config_hash=section.fingerprint(), started_at=started_at)
            if self.runner is None:
                if self.detect:
                    name = self.mode_key()
                    mode = self.cache.meta(name) or await self.client.detect_mode()
                    self.cache.set_meta(name, mode)
                    self.client.mode = mode
                    log.info("structured output for %s: %s", self.client.base_url, mode)
            brainstorms = self.brainstorm_jobs()
            complete = await self._phase("brainstorm", brainstorms)
            if not complete and self.runner is not None:
                return self._waiting()
            tasks = self._write_tasks(brainstorms)
            jobs, chosen, blocked = self.example_jobs(tasks)
            for slot_id in blocked:
                self._count_slot(self.blocked_groups[slot_id][0], "failed")
            complete = await self._phase("examples", jobs) and complete
            if not complete and self.runner is not None and self.cache.submitted():
                return self._waiting()
        except WorkbenchError as err:  # e.g. a 401 mid-run: never leave the stage shown as running
            if (self.run.stage_entry(STAGE) or {}).get("status") == "running":
                self.run.record_stage(STAGE, status="partial", config_hash=section.fingerprint(),
                                      stats={"stopped_by": err.line()}, started_at=started_at)
            raise
        finally:
            await self.client.close()
        outputs = self._write_generated(jobs, chosen, blocked)
        failed_slots = sum(self.state.failed.values())
        open_brainstorms = {(job.language, job.family) for job in self.pending_quiet(brainstorms)}
        unfinished = len(self.pending_quiet(jobs)) + sum(
            1 for slot_id in blocked if self.blocked_groups[slot_id] in open_brainstorms)
        stats = self._stats(unfinished=unfinished, failed=failed_slots)
        stats["transport_unfinished"] = self._transport_unfinished(brainstorms + jobs)
        entries = self.cache.get_many([job.key for job in brainstorms]).values()
        stats["brainstorm_cost_usd"] = round(sum(e.cost_usd for e in entries), 6)
        stats["total_cost_usd"] = round(self.cache.total_cost(), 6)
        stats["usage"] = self.cache.usage()
        status = "complete" if unfinished == 0 else "partial"
        self.run.record_stage(STAGE, status=status, config_hash=section.fingerprint(), outputs=outputs, stats=stats,
                              started_at=started_at)
        return StageResult(STAGE, outputs=outputs, stats=stats)

    def _transport_unfinished(self, jobs: list[Job]) -> int:
        """Requests left unanswered because transport errors outlasted the retries (status ``error``)."""
        entries = self.cache.get_many([job.key for job in jobs])
        return sum(1 for job in jobs if (entry := entries.get(job.key)) is not None and entry.status == "error")

    def _waiting(self) -> StageResult:
        stats = self._stats(unfinished=None, failed=None)
        stats["batch_jobs"] = {k: len(v) for k, v in self.cache.submitted().items()}
        return StageResult(STAGE, stats=stats)

    def _stats(self, *, unfinished, failed) -> dict[str, Any]:
        s = self.state
        per_language = {}
        for code in self.plans:
            per_language[code] = {"planned": s.planned[code], "ok": s.ok[code], "failed": s.failed[code]}
        return {
            "requests_sent": self.client.sent, "cached": s.cached, "invalid_answers": s.invalid,
            "truncated": dict(s.truncated),
            "errors": dict(self.client.errors), "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens, "cost_usd": round(s.cost_usd, 6),
            "price_known": self.pricer.known, "unfinished": unfinished, "failed": failed,
            "budget_hit": self.budget_hit, "per_language": per_language, "model": self.section.model,
            "structured_output": self.client.mode,
        }

    # -- tables ----------------------------------------------------------------------------
    def _write_tasks(self, jobs: list[Job]) -> dict[tuple[str, str, int], list[str]]:
        """Merge each (language, family, seed)'s brainstorm rounds (duplicates dropped) into tasks/."""
        entries = self.cache.get_many([job.key for job in jobs])
        rounds: dict[tuple[str, str, int], list[list[str]]] = defaultdict(list)
        unfinished: set[tuple[str, str, int]] = set()
        for job in jobs:
            entry = entries.get(job.key)
            group = (job.language, job.family, job.seed)
            if entry is None or entry.status not in FINISHED:
                unfinished.add(group)  # the task list must not change later: wait for every round
            if entry is None or entry.status != "ok":
                self.brainstorm_errors.setdefault(group, entry.error if entry else "not sent")
                continue
            rounds[group].append(entry.result["tasks"])
        # a group goes on once every round is final and at least one answered
        tasks = {group: prompts.merge_tasks(lists) for group, lists in rounds.items() if group not in unfinished}
        for group in tasks:
            self.brainstorm_errors.pop(group, None)
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for (code, family, seed), merged in tasks.items():
            for index, task in enumerate(merged):
                rows[code].append({"language": code, "family": family, "seed": seed, "task_index": index,
                                   "task": task, "model": self.section.model})
        for code in self.plans:
            self.run.write_table("tasks", code, pl.DataFrame(rows.get(code, []), schema=TASKS), TASKS)
        return tasks

    def _write_generated(self, jobs: list[Job], chosen: dict[str, str], blocked: dict[str, str]) -> dict[str, int]:
        entries = self.cache.get_many([job.key for job in jobs])
        by_slot = {job.slot_id: entries.get(job.key) for job in jobs}
        outputs = {}
        for code, plan in self.plans.items():
            rows = []
            for slot in plan.iter_rows(named=True):
                entry = by_slot.get(slot["slot_id"])
                row: dict[str, Any] = {c: slot[c] for c in ("slot_id", "language", "family", *PLACEHOLDER_COLUMNS)}
                row.update(dict.fromkeys(EXAMPLE_FIELDS))
                row["task"] = chosen.get(slot["slot_id"])
                row["model"] = self.section.model
                if entry is not None and entry.status == "ok":
                    row.update({name: entry.result.get(name) for name in FAMILIES[slot["family"]].fields})
                    row.update(status="ok", error=None)
                elif slot["slot_id"] in blocked:
                    row.update(status="failed", error=blocked[slot["slot_id"]])
                elif entry is None:
                    reason = "--max-cost reached before this slot was sent" if self.budget_hit else "not sent"
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
            self.run.write_table("generated", code, pl.DataFrame(rows, schema=GENERATED), GENERATED)
            outputs[f"generated/{code}.parquet"] = len(rows)
        return outputs

    # -- dry run ---------------------------------------------------------------------------
    def dry_run(self) -> StageResult:
        """Requests, tokens and cost of what is not cached yet, sized like the real requests."""
        brainstorms = self.pending(self.brainstorm_jobs())
        cached_before = self.state.cached
        examples, _, _ = self.example_jobs(None)
        examples = self.pending(examples)
        rows = {row["slot_id"]: row for plan in self.plans.values() for row in plan.iter_rows(named=True)}
        prompt_tokens = sum(_estimate_tokens(job.body) for job in brainstorms + examples)
        by_family: dict[str, int] = defaultdict(int)
        for job in examples:
            by_family[job.family] += min(self.expected_tokens(rows[job.slot_id]), job.body["max_tokens"])
        completion_tokens = len(brainstorms) * self.section.est_brainstorm_tokens + sum(by_family.values())
        cost = self.pricer.cost(prompt_tokens, completion_tokens)
        per_language: dict[str, dict[str, int]] = defaultdict(lambda: {"requests": 0})
        for job in brainstorms + examples:
            per_language[job.language]["requests"] += 1
        max_tokens: dict[str, list[int]] = defaultdict(list)
        for job in examples:
            max_tokens[job.family].append(job.body["max_tokens"])
        stats = {
            "dry_run": True, "requests": len(brainstorms) + len(examples), "brainstorm_requests": len(brainstorms),
            "example_requests": len(examples), "already_cached": self.state.cached, "est_prompt_tokens": prompt_tokens,
            "est_completion_tokens": completion_tokens, "est_cost_usd": round(cost, 4), "price_known": self.pricer.known,
            "model": self.section.model, "per_language": dict(per_language), "cached_brainstorms": cached_before,
            "batch": self.pricer.batch, "est_completion_by_family": dict(by_family),
            "max_tokens_by_family": {f: (min(v), max(v)) for f, v in sorted(max_tokens.items())},
        }
        return StageResult(STAGE, stats=stats)


def _estimate_tokens(body: dict[str, Any]) -> int:
    """~4 characters per token for Latin text, never fewer tokens than words (a dry-run estimate)."""
    text = " ".join(m["content"] for m in body["messages"])
    return max(math.ceil(len(text) / 4), len(text.split()))


def _local_context_tokens() -> int:
    """The embedded server's context window (its ``n_ctx``): budgets must fit it with the prompt."""
    import inspect

    from workbench.generate.local import LocalServer

    return inspect.signature(LocalServer).parameters["n_ctx"].default


def unfinished_summary(stats: dict[str, Any]) -> str:
    """One clause on why slots are unfinished, from the stage stats (for the CLI and the pipeline)."""
    parts = [f"{stats.get('unfinished') or 0} slot(s) unfinished"]
    if stats.get("transport_unfinished"):
        errors = ", ".join(f"{k}={v}" for k, v in sorted((stats.get("errors") or {}).items()) if k != "gave_up")
        parts.append(f"{stats['transport_unfinished']} request(s) gave up on transport errors ({errors or 'none'})")
    if stats.get("budget_hit"):
        parts.append("--max-cost reached")
    return "; ".join(parts)


def generation_notice(config: RunConfig) -> str | None:
    """The line to show before generating with the embedded demo model (never silently)."""
    if config.generate.base_url != "local":
        return None
    return ("generating with the embedded demo model SmolLM2-135M-Instruct (generate.base_url = \"local\"): "
            "English-ish text for trying the pipeline, not real data; give --base-url/--model or set "
            "[generate] base_url for a real model")
