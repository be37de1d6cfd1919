"""OpenAI Batch API mode: ``workbench generate RUN --batch``, ``workbench batch status|collect RUN``.

``generate --batch`` writes the unfinished requests of the current step (brainstorm first, then
examples) as JSONL files within the API limits (``batch_max_requests`` ≤ 50,000 lines and
``batch_max_bytes`` ≤ 200 MB per file), uploads them (``purpose="batch"``), creates one batch per
file and marks each request ``submitted`` in ``cache.sqlite`` with its batch id. The line's
``custom_id`` is the request's cache key. ``batch collect`` downloads finished batches' output and
error files (:func:`ingest_finished`) and stores each answer in the same cache by ``custom_id`` (validated like any answer;
an invalid answer with samples left goes back to unfinished and is resubmitted with the next
step), then continues: it submits the next step or, when every slot is finished, writes the tables.
Costs use the price table times ``batch_discount``. An answer cut at ``max_tokens``
(``finish_reason == "length"``) is resubmitted once with twice the budget, then recorded
``truncated`` (failed), as in direct mode.

``[generate] batch = true`` makes ``workbench run`` do all of this itself
(the stage body, :func:`workbench.generate.stage.generate`): submit, poll with a growing wait (``batch_poll_s`` x 1.5 per poll, at
most ``batch_poll_max_s``), collect, submit the next step, until the tables are written. It is
resumable: the open batches are in ``cache.sqlite``, so a re-run polls them instead of
submitting again.
"""

from __future__ import annotations

import io
import json
import logging
import os
from typing import Any

import openai

from workbench.config import GenerateSection, RunConfig
from workbench.errors import WorkbenchError
from workbench.generate import budget, prompts
from workbench.generate.budget import TRUNCATED, truncation_error
from workbench.generate.cache import RequestCache
from workbench.generate.client import EndpointError, LLMClient, resolve_mode
from workbench.generate.pricing import Pricer
from workbench.run import Run

log = logging.getLogger(__name__)
DONE_STATES = ("completed", "failed", "expired", "cancelled")


class BatchRunner:
    """Plugged into the engine's context: a phase submits its unfinished jobs instead of sending them."""

    def __init__(self, context: Any):
        self.context = context

    async def phase(self, name: str, todo: list) -> bool:
        cache: RequestCache = self.context.cache
        if todo:
            await self._submit(name, todo)
            return False
        return not cache.submitted()

    async def _submit(self, name: str, todo: list) -> None:
        section = self.context.section
        client: LLMClient = self.context.client
        chunks: list[list[tuple[Any, bytes]]] = [[]]
        size = 0
        before = self.context.cache.get_many([job.key for job in todo])
        for job in todo:
            prior = before.get(job.key)
            if prior is not None and (prior.error or "").startswith(TRUNCATED):
                larger = budget.larger_budget(job.body["max_tokens"], job.limit)
                if larger is not None:  # the last answer was cut: resubmit once with a larger budget
                    job.body = {**job.body, "max_tokens": larger}
            line = (json.dumps({"custom_id": job.key, "method": "POST", "url": "/v1/chat/completions",
                                "body": job.body}, ensure_ascii=False) + "\n").encode()
            if chunks[-1] and (len(chunks[-1]) >= section.batch_max_requests or size + len(line) > section.batch_max_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append((job, line))
            size += len(line)
        for index, chunk in enumerate(chunks):
            data = b"".join(line for _, line in chunk)
            try:
                upload = await client.openai.files.create(file=(f"{name}-{index:03d}.jsonl", io.BytesIO(data)),
                                                          purpose="batch")
                job_info = await client.openai.batches.create(
                    input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
            except openai.OpenAIError as err:
                raise _endpoint_error(err, client.base_url) from None
            before = self.context.cache.get_many([job.key for job, _ in chunk])
            for job, _ in chunk:
                prior = before.get(job.key)  # an earlier invalid sample keeps its attempts and usage
                self.context.record(job, "submitted", prior.raw_response if prior else None, None,
                                     prior.error if prior else None, prior.prompt_tokens if prior else 0,
                                     prior.completion_tokens if prior else 0, 0.0, prior.attempts if prior else 0,
                                     batch_id=job_info.id)
            log.info("submitted batch %s: %d %s requests (%d bytes)", job_info.id, len(chunk), name, len(data))


def _client(section: GenerateSection) -> LLMClient:
    if section.base_url == "local":
        raise WorkbenchError("the embedded server has no Batch API", where="generate.base_url",
                             fix="point --base-url at an endpoint with /v1/batches")
    return LLMClient(base_url=section.base_url, model=section.model, api_key=os.environ.get(section.api_key_env, ""),
                     timeout_s=section.timeout_s, max_retries=section.max_retries,
                     backoff_base_s=section.backoff_base_s, backoff_max_s=section.backoff_max_s,
                     mode=resolve_mode(section.structured_output, section.base_url, False), concurrency=4)


def batch_status(run: Run, config: RunConfig) -> list[dict[str, Any]]:
    """One dict per open batch: id, status, request counts."""
    import asyncio

    cache = RequestCache(run.cache_path)
    try:
        jobs = cache.submitted()
    finally:
        cache.close()

    async def fetch() -> list[dict[str, Any]]:
        client = _client(config.generate)
        try:
            rows = []
            for batch_id, keys in sorted(jobs.items()):
                info = await client.openai.batches.retrieve(batch_id)
                counts = info.request_counts
                rows.append({"batch_id": batch_id, "status": info.status, "requests": len(keys),
                             "completed": counts.completed if counts else None,
                             "failed": counts.failed if counts else None})
            return rows
        finally:
            await client.close()

    try:
        return asyncio.run(fetch())
    except openai.OpenAIError as err:
        raise _endpoint_error(err, config.generate.base_url) from None


def ingest_finished(run: Run, section: GenerateSection) -> dict[str, int]:
    """Ingest every finished batch into the cache; counts of ok/failed/resubmitted answers and open batches.

    :func:`workbench.generate.stage.collect` then continues the stage.
    """
    import asyncio

    pricer = Pricer(section, batch=True)
    cache = RequestCache(run.cache_path)
    ingested = {"ok": 0, "failed": 0, "resubmit": 0, "open_batches": 0}

    async def ingest() -> None:
        client = _client(section)
        try:
            for batch_id, keys in sorted(cache.submitted().items()):
                info = await client.openai.batches.retrieve(batch_id)
                if info.status not in DONE_STATES:
                    ingested["open_batches"] += 1
                    continue
                seen: set[str] = set()
                for file_id in (info.output_file_id, info.error_file_id):
                    if not file_id:
                        continue
                    content = await client.openai.files.content(file_id)
                    for line in content.text.splitlines():
                        if line.strip():
                            seen.add(_ingest_line(cache, pricer, json.loads(line), section.max_attempts, ingested))
                for key in set(keys) - seen:
                    entry = cache.get(key)
                    cache.update(key, status="error", raw_response=None, result=None,
                                 error=f"batch {batch_id} ended '{info.status}' without an answer",
                                 prompt_tokens=entry.prompt_tokens, completion_tokens=entry.completion_tokens,
                                 cost_usd=entry.cost_usd, attempts=entry.attempts)
                    ingested["resubmit"] += 1
        finally:
            await client.close()

    try:
        asyncio.run(ingest())
    except openai.OpenAIError as err:
        raise _endpoint_error(err, section.base_url) from None
    finally:
        cache.close()
    return ingested


def _ingest_line(cache: RequestCache, pricer, item: dict[str, Any], max_attempts: int, counts: dict[str, int]) -> str:
    key = item.get("custom_id", "")
    entry = cache.get(key)
    if entry is None:
        return key
    response = item.get("response") or {}
    body = response.get("body") or {}
    attempts = entry.attempts + 1
    usage = body.get("usage") or {}
    prompt_tokens = entry.prompt_tokens + int(usage.get("prompt_tokens") or 0)
    completion_tokens = entry.completion_tokens + int(usage.get("completion_tokens") or 0)
    cost = pricer.cost(prompt_tokens, completion_tokens)
    if response.get("status_code") != 200:
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        cache.update(key, status="error", raw_response=None, result=None,
                     error=f"batch line HTTP {response.get('status_code')}: {message or item.get('error')}",
                     prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost, attempts=attempts)
        counts["resubmit"] += 1
        return key
    choices = body.get("choices") or [{}]
    text = (choices[0].get("message") or {}).get("content")
    kind = "brainstorm" if entry.kind == "brainstorm" else _family_of(cache, key)
    if choices[0].get("finish_reason") == "length":
        counts["truncated"] = counts.get("truncated", 0) + 1
        max_tokens = int((cache.request_of(key) or {}).get("max_tokens") or 0)
        again = (entry.error or "").startswith(TRUNCATED)  # the earlier answer was cut too: resubmitted larger
        status = "failed" if again else "error"
        why = "again after one re-send with a larger budget" if again else "and is resubmitted with a larger budget"
        cache.update(key, status=status, raw_response=text, result=None, error=truncation_error(max_tokens, why),
                     prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost, attempts=attempts)
        counts["failed" if again else "resubmit"] += 1
        return key
    try:
        result = prompts.parse_answer(kind, text)
    except prompts.InvalidAnswer as err:
        status = "failed" if attempts >= max_attempts else "error"
        cache.update(key, status=status, raw_response=text, result=None, error=f"invalid answer: {err}",
                     prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost, attempts=attempts)
        counts["failed" if status == "failed" else "resubmit"] += 1
        return key
    cache.update(key, status="ok", raw_response=text, result=result, error=None, prompt_tokens=prompt_tokens,
                 completion_tokens=completion_tokens, cost_usd=cost, attempts=attempts)
    counts["ok"] += 1
    return key


def _endpoint_error(err: openai.OpenAIError, base_url: str) -> EndpointError:
    """One line for a Batch API call that failed (no network, no /files or /batches, a refused key)."""
    if isinstance(err, openai.APIStatusError):
        return EndpointError(f"Batch API call answered HTTP {err.status_code}: {str(err.message)[:160]}",
                             where=base_url, fix="the endpoint needs /v1/files and /v1/batches (OpenAI's Batch API) "
                             "and a valid key; without them set generate.batch = false")
    return EndpointError(f"cannot reach the Batch API ({type(err).__name__})", where=base_url,
                         fix="check generate.base_url and the network; open batches are kept in cache.sqlite")


def _family_of(cache: RequestCache, key: str) -> str:
    row = cache.db.execute("SELECT family FROM requests WHERE key=?", (key,)).fetchone()
    return row[0]
