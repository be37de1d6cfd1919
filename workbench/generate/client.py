"""The one LLM-client interface of the workbench: async chat completions with retries.

Built on ``openai.AsyncOpenAI`` (any ``base_url``: OpenAI, vLLM, llama.cpp server, Ollama) with the
SDK's own retries switched off, so the policy is ours and visible:

- 429 waits for ``Retry-After`` (seconds, an HTTP date, or ``retry-after-ms``) when the server
  sends it, else backs off; the wait holds every request of the client (the endpoint's rate limit
  is shared), and it is honoured up to ``backoff_max_s``: a longer one counts as a transport
  error, and no further request is sent until it is over (:class:`RateLimitedOut`), so a run
  told to wait an hour ends with one line instead of sleeping silently;
- 5xx, timeouts (per-request ``timeout_s``), connection errors and a 200 whose body is not JSON
  (a proxy's HTML page) back off exponentially with full jitter:
  ``uniform(0, min(backoff_max, backoff_base * 2**n))``;
- 401/403/404/400 are not retried: they become one :class:`EndpointError` line naming the fix;
- an optional global request and token rate limit (token buckets per minute).

Structured output per endpoint (``structured_output``): ``json_schema`` (OpenAI strict),
``llamacpp`` (llama-cpp-python's ``{"type": "json_object", "schema": ...}``), ``json_object`` or
``none`` (plain text; the answer is then found by :func:`workbench.generate.prompts.extract_json`).
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)
LANE_WIDTH = 8  # connections per HTTP pool


class EndpointError(WorkbenchError):
    """The endpoint refuses the request for a reason retrying cannot fix (key, model, URL)."""


class RetriesExhausted(Exception):
    """Transport errors (429/5xx/timeout/connection) outlasted the retry budget of one request."""


class RateLimitedOut(RetriesExhausted):
    """Not sent: the endpoint asked for a wait longer than ``backoff_max_s`` that is not over yet."""


@dataclass
class Reply:
    text: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str | None


def response_format(mode: str, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}
    if mode == "llamacpp":
        return {"type": "json_object", "schema": schema}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def resolve_mode(mode: str, base_url: str, local: bool) -> str:
    """``auto``: llama.cpp's form for the embedded server, OpenAI strict schemas elsewhere."""
    if mode != "auto":
        return mode
    return "llamacpp" if local else "json_schema"


class _Bucket:
    """A token bucket refilled at ``per_minute / 60`` units per second."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute / 60.0)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, amount: float) -> None:
        async with self.lock:
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.level >= min(amount, self.capacity):
                    self.level -= amount
                    return
                await asyncio.sleep((min(amount, self.capacity) - self.level) / self.rate)


class LLMClient:
    """Sends one chat request at a time per caller; callers bound their own concurrency."""

    def __init__(self, *, base_url: str, model: str, api_key: str, timeout_s: float, max_retries: int,
                 backoff_base_s: float, backoff_max_s: float, mode: str, concurrency: int,
                 requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 temperature: float = 1.0, top_p: float = 1.0, rng: random.Random | None = None):
        # httpcore's pool costs O(connections x waiting requests) per request; several small pools
        # ("lanes", LANE_WIDTH connections each) keep the client's CPU per request flat as C grows.
        lanes = max(1, -(-concurrency // LANE_WIDTH))
        limits = httpx.Limits(max_connections=LANE_WIDTH + 2, max_keepalive_connections=LANE_WIDTH + 2)
        self.https = [httpx.AsyncClient(limits=limits, timeout=timeout_s) for _ in range(lanes)]
        self.lanes = [openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0,
                                         timeout=timeout_s, http_client=http) for http in self.https]
        self.openai = self.lanes[0]
        self.base_url, self.model, self.mode = base_url, model, mode
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.temperature, self.top_p = temperature, top_p
        self.rng = rng or random.Random(0)
        self.requests = _Bucket(requests_per_minute) if requests_per_minute else None
        self.tokens = _Bucket(tokens_per_minute) if tokens_per_minute else None
        self.errors: Counter[str] = Counter()  # 429, 5xx, timeout, connection, not_json, retry_after_over_cap
        self.sent = 0
        # the rate-limit state the progress line shows: a Retry-After wait every request honours,
        # requests sleeping in a back-off now, and a Retry-After above the cap (nothing sent until it ends)
        self.pause_until = 0.0
        self.backing_off = 0
        self.refused_until = 0.0
        self.refused_wait_s: float | None = None

    async def close(self) -> None:
        for lane, http in zip(self.lanes, self.https):
            await lane.close()
            await http.aclose()

    def params(self, max_tokens: int) -> dict[str, Any]:
        """The sampling parameters that go into the cache key."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": max_tokens, "mode": self.mode}

    def body(self, messages: list[dict[str, str]], max_tokens: int, schema_name: str,
             schema: dict[str, Any]) -> dict[str, Any]:
        """The chat-completions request body (also the Batch API line body)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                "top_p": self.top_p, "max_tokens": max_tokens}
        fmt = response_format(self.mode, schema_name, schema)
        if fmt is not None:
            body["response_format"] = fmt
        return body

    async def preflight(self) -> list[str] | None:
        """Check the endpoint is an OpenAI-compatible API at all; the model ids it lists, or None.

        ``GET /models`` first; a server without it gets one tiny ``POST /chat/completions``
        (``max_tokens`` 1). Anything that is not that API (an HTML page, 405/501, a body without
        ``choices``) fails here in one line instead of being retried slot after slot.
        """
        headers = {"Authorization": f"Bearer {self.openai.api_key}"}
        timeout = min(self.timeout_s, 15)
        http = self.https[0]
        try:
            listed = await http.get(f"{self.base_url}/models", headers=headers, timeout=timeout)
            if listed.status_code in (401, 403):
                raise EndpointError(f"{listed.status_code} unauthorized: {_text_message(listed)}", where=self.base_url,
                                    fix="set the API key in the environment variable named by generate.api_key_env")
            data = _json_or_none(listed)
            if listed.status_code == 200 and isinstance(data, dict) and isinstance(data.get("data"), list):
                return [m.get("id") for m in data["data"] if isinstance(m, dict)]
            probe = await http.post(f"{self.base_url}/chat/completions", headers=headers, timeout=timeout,
                                    json={"model": self.model, "max_tokens": 1,
                                          "messages": [{"role": "user", "content": "ok"}]})
        except httpx.TimeoutException:
            raise EndpointError("cannot reach the endpoint (timeout)", where=self.base_url,
                                fix="check --base-url (it usually ends in /v1) and that the server runs") from None
        except httpx.HTTPError as err:
            raise EndpointError(f"cannot reach the endpoint ({type(err).__name__})", where=self.base_url,
                                fix="check --base-url (it usually ends in /v1) and that the server runs") from None
        answer = _json_or_none(probe)
        if probe.status_code in (401, 403):
            raise EndpointError(f"{probe.status_code} unauthorized: {_text_message(probe)}", where=self.base_url,
                                fix="set the API key in the environment variable named by generate.api_key_env")
        if probe.status_code == 404 and isinstance(answer, dict):
            raise EndpointError(f"404 not found: {_text_message(probe)}", where=self.base_url,
                                fix=f"check the model name '{self.model}' (--model) and that --base-url ends in /v1")
        if (probe.status_code == 200 and isinstance(answer, dict) and "choices" in answer) or (
                probe.status_code in (400, 408, 409, 422, 429) or probe.status_code in (500, 502, 503, 504)):
            return None  # a chat API (transient errors are the retry policy's business)
        kind = probe.headers.get("content-type", "no content type").split(";")[0]
        raise EndpointError(
            f"not an OpenAI-compatible API: GET /models answered HTTP {listed.status_code}, POST /chat/completions "
            f"answered HTTP {probe.status_code} ({kind})", where=self.base_url,
            fix="point --base-url at the server's OpenAI API root, usually ending in /v1")

    async def detect_mode(self) -> str:
        """Probe which structured-output form the endpoint accepts, strictest first.

        One tiny request per form (max_tokens 16): ``json_schema`` (OpenAI strict), ``llamacpp``,
        ``json_object``, else ``none``. 400/422 mean "not supported"; a 5xx is retried twice and
        then also counts as "not supported" (llama.cpp answers the OpenAI form with HTTP 500).
        """
        schema = {"type": "object", "properties": {"ok": {"type": "string"}}, "required": ["ok"],
                  "additionalProperties": False}
        messages = [{"role": "user", "content": 'Answer with the JSON object {"ok": "yes"}.'}]
        for mode in ("json_schema", "llamacpp", "json_object"):
            body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": 16,
                                    "response_format": response_format(mode, "probe", schema)}
            for attempt in range(3):
                try:
                    await self.lanes[0].post("/chat/completions", cast_to=object, body=body,
                                             options={"headers": {"X-Workbench-Key": f"probe-{mode}"}})
                    return mode
                except (openai.BadRequestError, openai.UnprocessableEntityError):
                    break
                except (openai.InternalServerError, json.JSONDecodeError, openai.APIResponseValidationError) as err:
                    self.errors["5xx" if isinstance(err, openai.InternalServerError) else "not_json"] += 1
                    await asyncio.sleep(self._backoff(attempt))
                except openai.RateLimitError as err:
                    self.errors["429"] += 1
                    try:
                        wait = self._honour_retry_after(err.response)
                    except RetriesExhausted as refused:
                        raise EndpointError(f"rate-limited while probing structured output: {refused}",
                                            where=self.base_url, fix="re-run the same command once that wait is over, "
                                            "or raise generate.backoff_max_s") from None
                    await asyncio.sleep(self._backoff(attempt) if wait is None else wait)
                except openai.APITimeoutError:
                    self.errors["timeout"] += 1
                    await asyncio.sleep(self._backoff(attempt))
                except openai.APIConnectionError:
                    self.errors["connection"] += 1
                    await asyncio.sleep(self._backoff(attempt))
                except openai.NotFoundError as err:
                    raise EndpointError(f"404 not found: {_message(err)}", where=self.base_url,
                                        fix=f"check the model name '{self.model}' (--model) and that --base-url ends in /v1") from None
                except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
                    raise EndpointError(f"{err.status_code} unauthorized: {_message(err)}", where=self.base_url,
                                        fix="set the API key in the environment variable named by generate.api_key_env") from None
        return "none"

    def rate_state(self) -> str:
        """What the client is waiting for now, for the progress line ("" when nothing)."""
        now = time.monotonic()
        parts = []
        if self.refused_until > now:
            parts.append(f"Retry-After {self.refused_wait_s:.0f}s is over backoff_max_s {self.backoff_max_s:g}s: "
                         f"not sending for {self.refused_until - now:.0f}s")
        elif self.pause_until > now:
            parts.append(f"rate-limited: waiting {self.pause_until - now:.0f}s (Retry-After)")
        if self.backing_off:
            parts.append(f"{self.backing_off} backing off")
        return ", ".join(parts)

    async def _wait(self, seconds: float) -> None:
        self.backing_off += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self.backing_off -= 1

    def _honour_retry_after(self, response: httpx.Response | None) -> float | None:
        """The wait a 429/5xx asks for: shared by every request when within ``backoff_max_s``; a
        longer one refuses sending until it is over and raises (a transport error)."""
        wait = _retry_after(response)
        if wait is None:
            return None
        now = time.monotonic()
        if wait > self.backoff_max_s:
            self.errors["retry_after_over_cap"] += 1
            self.refused_until = max(self.refused_until, now + wait)
            self.refused_wait_s = max(self.refused_wait_s or 0.0, wait)
            raise RetriesExhausted(self._refusal(wait))
        self.pause_until = max(self.pause_until, now + wait)
        return wait

    def _refusal(self, wait: float) -> str:
        return (f"the endpoint asked to wait {wait:.0f} s (Retry-After), longer than generate.backoff_max_s = "
                f"{self.backoff_max_s:g} s")

    async def chat(self, body: dict[str, Any], key: str, lane: int = 0) -> Reply:
        """One completion for ``body``; transport errors retried, fatal ones raised as EndpointError."""
        seen: Counter[str] = Counter()
        estimate = body.get("max_tokens", 0) + sum(len(m["content"]) for m in body["messages"]) // 4
        for attempt in range(self.max_retries + 1):
            if self.refused_until > time.monotonic():
                raise RateLimitedOut(self._refusal(self.refused_wait_s or 0.0))
            if self.pause_until > time.monotonic():  # a Retry-After another request was given
                await self._wait(self.pause_until - time.monotonic())
            if self.requests:
                await self.requests.take(1)
            if self.tokens:
                await self.tokens.take(estimate)
            started = time.monotonic()
            self.sent += 1
            try:
                # The generic post() skips the SDK's per-field TypedDict transform of ``create()``
                # (measured: ~7 ms CPU per request with a schema); the body is already plain JSON.
                # cast_to=object returns the decoded JSON without building the pydantic model.
                response = await self.lanes[lane % len(self.lanes)].post(
                    "/chat/completions", cast_to=object, body=body,
                    options={"headers": {"X-Workbench-Key": key}})
            except openai.RateLimitError as err:
                self.errors["429"] += 1
                seen["429"] += 1
                delay = self._honour_retry_after(err.response)
                delay = self._backoff(attempt) if delay is None else delay
            except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
                raise EndpointError(f"{err.status_code} unauthorized: {_message(err)}", where=self.base_url,
                                    fix="set the API key in the environment variable named by generate.api_key_env") from None
            except (json.JSONDecodeError, openai.APIResponseValidationError):
                # a 200 that is not the API's JSON (a proxy's or load balancer's HTML page): transient
                self.errors["not_json"] += 1
                seen["not_json"] += 1
                delay = self._backoff(attempt)
            except openai.NotFoundError as err:
                raise EndpointError(f"404 not found: {_message(err)}", where=self.base_url,
                                    fix=f"check the model name '{self.model}' (--model) and that --base-url ends in /v1") from None
            except openai.BadRequestError as err:
                raise EndpointError(f"400 bad request: {_message(err)}", where=self.base_url,
                                    fix="try another generate.structured_output mode (json_object or none)") from None
            except openai.APITimeoutError:
                self.errors["timeout"] += 1
                seen["timeout"] += 1
                delay = self._backoff(attempt)
            except openai.APIConnectionError:
                self.errors["connection"] += 1
                seen["connection"] += 1
                delay = self._backoff(attempt)
            except openai.APIStatusError as err:
                if err.status_code < 500 and err.status_code not in (408, 409):
                    raise EndpointError(f"HTTP {err.status_code}: {_message(err)}", where=self.base_url) from None
                self.errors["5xx"] += 1
                seen["5xx"] += 1
                delay = self._honour_retry_after(err.response)
                delay = self._backoff(attempt) if delay is None else delay
            else:
                if isinstance(response, dict):
                    return _reply(response, time.monotonic() - started)
                # the SDK hands back the text of a non-JSON content type: not an answer, a transport fault
                self.errors["not_json"] += 1
                seen["not_json"] += 1
                delay = self._backoff(attempt)
            if attempt < self.max_retries:
                await self._wait(delay)
        raise RetriesExhausted(f"gave up after {self.max_retries + 1} tries ({', '.join(f'{k}={v}' for k, v in seen.items())})")

    def _backoff(self, attempt: int) -> float:
        return self.rng.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))


def _reply(data: Any, latency_s: float) -> Reply:
    """Read a chat.completion JSON object defensively (servers differ in what they fill in)."""
    if not isinstance(data, dict):
        return Reply(None, 0, 0, latency_s, None)
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    usage = data.get("usage") or {}
    content = message.get("content") if isinstance(message, dict) else None
    return Reply(
        text=content if isinstance(content, str) else None,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        latency_s=latency_s,
        finish_reason=choice.get("finish_reason"),
    )


def _retry_after(response: httpx.Response | None) -> float | None:
    """Seconds a response asks to wait: ``retry-after-ms``, else ``Retry-After`` in seconds or as an
    HTTP date; None when it asks for nothing readable."""
    if response is None:
        return None
    millis = response.headers.get("retry-after-ms")
    seconds = response.headers.get("retry-after")
    try:
        if millis is not None:
            return max(0.0, float(millis) / 1000)
        if seconds is not None:
            return max(0.0, float(seconds))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(seconds) if seconds else None
        except (TypeError, ValueError):
            return None
        if when is None or when.tzinfo is None:
            return None
        return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
    return None


def _message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:200]
    return str(err.message)[:200]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _text_message(response: httpx.Response) -> str:
    """The error message of a raw response (OpenAI's ``{"error": {"message": ...}}``), else its start."""
    data = _json_or_none(response)
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:200]
    return response.text[:80].replace("\n", " ") or response.reason_phrase
