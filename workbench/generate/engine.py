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
from pathlib import Path
from typing import Any

import polars as pl

from workbench.config import GenerateSection, RunConfig
from workbench.errors import WorkbenchError
from workbench.generate import budget, prompts
from workbench.generate.budget import truncation_error
from workbench.generate.cache import FINISHED, RequestCache
from workbench.generate.client import EndpointError, LLMClient, RateLimitedOut, RetriesExhausted, resolve_mode
from workbench.generate.jobs import Job, JobBuilder
from workbench.generate.pricing import Pricer
from workbench.generate.tables import brainstormed_tasks, write_generated, write_tasks
from workbench.languages import Registry
from workbench.run import Folder, Run, StageResult
from workbench.tables import PLAN

STAGE = "generate"
LOCAL_SERVER_LOG = "llama-server.log"  # the embedded server's output, in the run directory while it runs
log = logging.getLogger(__name__)


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
    truncated_failed: int = 0  # requests recorded failed because the answer was cut again (or could not grow)
    errors: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    phase: str = ""
    waiting: str = ""  # what the client waits for now (Retry-After, back-offs), "" when nothing
    started: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        return self.sent / max(1e-9, time.monotonic() - self.started)


ProgressCallback = Callable[[Progress], None]


def generate_tables(run: Run, section: GenerateSection, registry: Registry, *, seed: int, dry_run: bool = False, batch: bool = False,
                    retry_failed: bool = False, progress: ProgressCallback | None = None,
                    base_url: str | None = None) -> StageResult:
    """Run (or resume) generation for every planned language; see the module docstring. The
    manifest is the runner's: this returns the status (complete, partial, waiting) with the result.

    ``section`` is ``[generate]``, ``seed`` the run's (``[run] seed``: the retry backoff's jitter).
    ``base_url`` overrides the section's. With ``base_url = "local"`` (and no override) this call
    starts the embedded llama.cpp server and runs again against its URL. With ``batch=True`` requests go through the Batch API
    (:mod:`workbench.generate.batch`) and the call returns after submitting or collecting.
    """
    plans = _read_plans(run)
    if dry_run:
        return StageResult(STAGE, stats=estimate_generation(section, registry, plans, cache_path=run.cache_path, batch=batch))
    local = section.base_url == "local"
    url = base_url or section.base_url
    if url == "local":
        from workbench.generate.local import serve_local

        with serve_local(log_path=run.root / LOCAL_SERVER_LOG) as local_url:
            return generate_tables(run, section, registry, seed=seed, dry_run=dry_run, batch=batch, retry_failed=retry_failed,
                                   progress=progress, base_url=local_url)
    mode = resolve_mode(section.structured_output, url, local)
    client = LLMClient(
        base_url=url, model=section.model, api_key=os.environ.get(section.api_key_env, ""),
        timeout_s=section.timeout_s, max_retries=section.max_retries, backoff_base_s=section.backoff_base_s,
        backoff_max_s=section.backoff_max_s, mode=mode, concurrency=1 if local else section.concurrency,
        requests_per_minute=section.requests_per_minute, tokens_per_minute=section.tokens_per_minute,
        temperature=section.temperature, top_p=section.top_p, rng=random.Random(f"{seed}:backoff"),
    )
    context_tokens = section.context_tokens or (_local_context_tokens() if local else None)
    cache = RequestCache(run.cache_path)
    try:
        engine = Engine(run=run, section=section, plans=plans,
                        builder=JobBuilder(section, client, registry, plans, context_tokens),
                        client=client, cache=cache, pricer=Pricer(section, batch),
                        concurrency=1 if local else section.concurrency, retry_failed=retry_failed, progress=progress)
        if batch:
            from workbench.generate.batch import BatchRunner

            engine.runner = BatchRunner(engine)
        return asyncio.run(engine.run_all())
    finally:
        cache.close()


def _read_plans(run: Run) -> dict[str, pl.DataFrame]:
    codes = run.table_languages(Folder.PLAN)
    if not codes:
        raise WorkbenchError("no plan tables", where=str(run.stage_dir(Folder.PLAN)), fix="run 'workbench plan RUN' first")
    return {code: run.read_table(Folder.PLAN, code, PLAN) for code in codes}


@dataclass
class Engine:
    """One generate invocation: runs the jobs (directly or via batch), keeps the counters, writes tables."""

    run: Run
    section: GenerateSection
    plans: dict[str, pl.DataFrame]
    builder: JobBuilder
    client: LLMClient
    cache: RequestCache
    pricer: Pricer
    concurrency: int
    retry_failed: bool = False
    progress: ProgressCallback | None = None
    runner: Any = None  # BatchRunner in batch mode
    state: Progress = field(default_factory=Progress)
    budget_hit: bool = False

    def __post_init__(self) -> None:
        for code, plan in self.plans.items():
            self.state.planned[code] = plan.height
        # "auto" on a remote endpoint: probe once per (endpoint, model), remember it in the cache
        self.detect = self.section.structured_output == "auto" and self.section.base_url != "local"
        if self.detect and self.cache.meta(self.mode_key()):
            self.client.mode = self.cache.meta(self.mode_key())
        self.spent_before = self.cache.total_cost()  # --max-cost caps the run's total, across invocations

    def mode_key(self) -> str:
        return f"structured_output:{self.client.base_url}:{self.section.model}"

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

        async def tick() -> None:  # the view hears from a run that waits (Retry-After, back-off), not only from answers
            while True:
                await asyncio.sleep(1.0)
                self._notify()

        ticker = asyncio.create_task(tick())
        try:
            workers = [asyncio.create_task(worker(lane)) for lane in range(min(self.concurrency, max(1, len(jobs))))]
            await asyncio.gather(*workers)
        finally:
            ticker.cancel()
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
            except RateLimitedOut:
                return  # not sent (the endpoint asked for a wait over the cap): a re-run sends it
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
                    self.state.truncated_failed += 1
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
        self.state.waiting = self.client.rate_state()
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

    async def run_all(self) -> StageResult:
        try:
            await self.client.preflight()  # a wrong endpoint fails here, before any request is sent
            if self.runner is None:
                if self.detect:
                    name = self.mode_key()
                    mode = self.cache.meta(name) or await self.client.detect_mode()
                    self.cache.set_meta(name, mode)
                    self.client.mode = mode
                    log.info("structured output for %s: %s", self.client.base_url, mode)
            brainstorms = self.builder.brainstorm_jobs()
            complete = await self._phase("brainstorm", brainstorms)
            if not complete and self.runner is not None:
                return self._waiting()
            tasks, brainstorm_errors = write_tasks(self.run, self.cache, self.plans, brainstorms, self.section.model)
            examples = self.builder.example_jobs(tasks, brainstorm_errors)
            for language, _ in examples.blocked_groups.values():
                self._count_slot(language, "failed")
            complete = await self._phase("examples", examples.jobs) and complete
            if not complete and self.runner is not None and self.cache.submitted():
                return self._waiting()
        finally:
            await self.client.close()
        outputs = write_generated(self.run, self.cache, self.plans, examples, self.section.model,
                                  budget_hit=self.budget_hit)
        jobs = examples.jobs
        failed_slots = sum(self.state.failed.values())
        open_brainstorms = {(job.language, job.family) for job in self.pending_quiet(brainstorms)}
        unfinished = len(self.pending_quiet(jobs)) + sum(
            1 for group in examples.blocked_groups.values() if group in open_brainstorms)
        stats = self._stats(unfinished=unfinished, failed=failed_slots)
        stats["transport_unfinished"] = self._transport_unfinished(brainstorms + jobs)
        entries = self.cache.get_many([job.key for job in brainstorms]).values()
        stats["brainstorm_cost_usd"] = round(sum(e.cost_usd for e in entries), 6)
        stats["total_cost_usd"] = round(self.cache.total_cost(), 6)
        stats["usage"] = self.cache.usage()
        if unfinished:
            stats["incomplete"] = unfinished_summary(stats)
        return StageResult(STAGE, outputs=outputs, stats=stats, status="complete" if unfinished == 0 else "partial")

    def _transport_unfinished(self, jobs: list[Job]) -> int:
        """Requests left unanswered because transport errors outlasted the retries (status ``error``)."""
        entries = self.cache.get_many([job.key for job in jobs])
        return sum(1 for job in jobs if (entry := entries.get(job.key)) is not None and entry.status == "error")

    def _waiting(self) -> StageResult:
        stats = self._stats(unfinished=None, failed=None)
        stats["batch_jobs"] = {k: len(v) for k, v in self.cache.submitted().items()}
        return StageResult(STAGE, stats=stats, status="waiting")

    def _stats(self, *, unfinished, failed) -> dict[str, Any]:
        s = self.state
        per_language = {}
        for code in self.plans:
            per_language[code] = {"planned": s.planned[code], "ok": s.ok[code], "failed": s.failed[code]}
        return {
            "requests_sent": self.client.sent, "cached": s.cached, "invalid_answers": s.invalid,
            "truncated": dict(s.truncated), "truncated_failed": s.truncated_failed,
            "errors": dict(self.client.errors), "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens, "cost_usd": round(s.cost_usd, 6),
            "price_known": self.pricer.known, "unfinished": unfinished, "failed": failed,
            "budget_hit": self.budget_hit, "per_language": per_language, "model": self.section.model,
            "structured_output": self.client.mode, "retry_after_over_cap_s": self.client.refused_wait_s,
            "backoff_max_s": self.section.backoff_max_s,
        }

    # -- dry run ---------------------------------------------------------------------------
    def dry_run(self) -> StageResult:
        """Requests, tokens and cost of what is not cached yet, sized like the real requests, per
        language and in all."""
        all_brainstorms = self.builder.brainstorm_jobs()
        brainstorms = self.pending(all_brainstorms)
        cached_before = self.state.cached
        # groups already brainstormed use their real tasks, so their cached examples count as cached
        tasks, _ = brainstormed_tasks(self.cache, all_brainstorms)
        examples = self.pending(self.builder.example_jobs(tasks, placeholder_missing=True).jobs)
        rows = {row["slot_id"]: row for plan in self.plans.values() for row in plan.iter_rows(named=True)}
        per_language: dict[str, dict[str, Any]] = {
            code: {"slots": plan.height, "requests": 0, "brainstorm_requests": 0, "example_requests": 0,
                   "already_cached": 0, "est_prompt_tokens": 0, "est_completion_tokens": 0, "est_cost_usd": 0.0}
            for code, plan in self.plans.items()}
        by_family: dict[str, int] = defaultdict(int)
        max_tokens: dict[str, list[int]] = defaultdict(list)
        for job in brainstorms + examples:
            info = per_language[job.language]
            prompt = _estimate_tokens(job.body)
            if job.kind == "brainstorm":
                completion = self.section.est_brainstorm_tokens
                info["brainstorm_requests"] += 1
            else:
                completion = min(self.builder.expected_tokens(rows[job.slot_id]), job.body["max_tokens"])
                by_family[job.family] += completion
                max_tokens[job.family].append(job.body["max_tokens"])
                info["example_requests"] += 1
            info["requests"] += 1
            info["est_prompt_tokens"] += prompt
            info["est_completion_tokens"] += completion
            info["est_cost_usd"] += self.pricer.cost(prompt, completion)
        for code, count in self.state.done.items():  # finished example slots (cached answers)
            per_language[code]["already_cached"] = count
        totals = {key: sum(info[key] for info in per_language.values())
                  for key in ("slots", "requests", "brainstorm_requests", "example_requests",
                              "est_prompt_tokens", "est_completion_tokens", "est_cost_usd")}
        stats = {
            "dry_run": True, **totals, "est_cost_usd": round(totals["est_cost_usd"], 4),
            "already_cached": self.state.cached, "price_known": self.pricer.known,
            "model": self.section.model, "per_language": per_language, "cached_brainstorms": cached_before,
            "batch": self.pricer.batch, "est_completion_by_family": dict(by_family),
            "max_tokens_by_family": {f: (min(v), max(v)) for f, v in sorted(max_tokens.items())},
        }
        return StageResult(STAGE, stats=stats)


def estimate_generation(section: GenerateSection, registry: Registry, plans: dict[str, pl.DataFrame], *,
                        cache_path: Path | None = None, batch: bool | None = None) -> dict[str, Any]:
    """The dry run over ``plans`` (in memory): requests, tokens and cost per language and in all,
    less what the request cache at ``cache_path`` already holds (when it exists). Sends nothing,
    writes nothing, starts no server."""
    batch = section.batch if batch is None else batch
    local = section.base_url == "local"
    url = "http://127.0.0.1:0/v1" if local else section.base_url  # never contacted
    client = LLMClient(base_url=url, model=section.model, api_key="", timeout_s=section.timeout_s,
                       max_retries=section.max_retries, backoff_base_s=section.backoff_base_s,
                       backoff_max_s=section.backoff_max_s, mode=resolve_mode(section.structured_output, url, local),
                       concurrency=1, temperature=section.temperature, top_p=section.top_p)
    context_tokens = section.context_tokens or (_local_context_tokens() if local else None)
    cache = RequestCache(cache_path if cache_path is not None and Path(cache_path).is_file() else None)
    try:
        engine = Engine(run=None, section=section, plans=plans,  # type: ignore[arg-type]
                        builder=JobBuilder(section, client, registry, plans, context_tokens),
                        client=client, cache=cache, pricer=Pricer(section, batch), concurrency=1)
        return engine.dry_run().stats
    finally:
        cache.close()
        asyncio.run(client.close())


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
    if stats.get("retry_after_over_cap_s"):
        parts.append(f"the endpoint asked to wait {stats['retry_after_over_cap_s']:.0f} s (Retry-After), longer than "
                     f"generate.backoff_max_s = {stats.get('backoff_max_s', 0):g} s, so nothing more was sent")
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
