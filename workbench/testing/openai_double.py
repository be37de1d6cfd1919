"""A TEST DOUBLE of an OpenAI-compatible endpoint on 127.0.0.1 — not a model, not for real runs.

It speaks just enough of the OpenAI HTTP API for the workbench's tests and benchmarks:
``POST /v1/chat/completions``, ``GET /v1/models``, ``POST /v1/files`` (multipart),
``GET /v1/files/{id}[/content]``, ``POST /v1/batches``, ``GET /v1/batches/{id}``. Answers are JSON
objects with the keys the request asks for (from ``response_format``'s schema, else from the
``"key"`` names quoted in the prompt), filled with real Tatoeba sentences in the language the prompt
names (``../shared/data/tatoeba``). Faults are injected on demand with configurable rates
(:class:`Faults`): 429 with ``Retry-After``, 500, slow answers past the client's timeout, truncated
or malformed JSON, wrong-language answers (in English, in the asked language's dominant neighbour
or in an unrelated language: ``Faults.wrong_language_as``) and dropped connections.

Every request is counted per cache key (the ``X-Workbench-Key`` header the workbench sends), so a
test can prove that no finished request was sent twice. ``GET /_stats`` returns the counters and
``POST /_faults`` replaces the fault settings of a running double.

Plain asyncio HTTP/1.1 (keep-alive, Content-Length bodies) so it can run in a thread of the test
process or as its own process::

    python -m workbench.testing.openai_double --port 8765 --latency 0.2 --rate-429 0.025
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

FAULT_NAMES = ("429", "500", "slow", "truncated", "malformed", "wrong_language", "drop", "html")
KNOWN_KEYS = ("tasks", "user_query", "positive_document", "hard_negative_document", "input_text",
              "label", "misleading_label", "input", "S1", "S2", "S3")


@dataclass
class Faults:
    """Fault rates (0..1 each, drawn per request in this order) and their parameters."""

    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_slow: float = 0.0
    rate_truncated: float = 0.0
    rate_malformed: float = 0.0
    rate_wrong_language: float = 0.0
    rate_drop: float = 0.0
    rate_html: float = 0.0  # a 200 whose body is an HTML page (a proxy's error page), not the API's JSON
    html_content_type: str = "text/html"  # what that page claims to be ("application/json": a mislabelled one)
    # what a wrong-language answer is written in: "english" (German when English was asked),
    # "neighbour" (the asked language's largest confusable neighbour: Russian for Belarusian,
    # Hindi for Marathi; English when it has none) or "other" (Finnish; Turkish when Finnish was asked)
    wrong_language_as: str = "english"
    retry_after: float = 0.05  # seconds, sent in Retry-After and retry-after-ms
    slow_seconds: float = 3.0
    latency: float = 0.0  # added to every chat completion
    max_faults_per_key: int | None = None  # after this many faults a key is answered cleanly
    seed: int = 0

    def __post_init__(self) -> None:
        if self.wrong_language_as not in ("english", "neighbour", "other"):
            raise ValueError(f"wrong_language_as '{self.wrong_language_as}': use english, neighbour or other")

    def rate(self, name: str) -> float:
        return getattr(self, f"rate_{name}")


@dataclass
class Stats:
    received: Counter = field(default_factory=Counter)  # every chat request, per key
    answered: Counter = field(default_factory=Counter)  # 200 answers sent, per key
    faults: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # fault -> key -> n
    total: int = 0
    batch_lines: int = 0  # requests that came as Batch API lines (the rest of ``total`` were direct)
    in_flight: int = 0  # chat requests being answered now
    max_in_flight: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"received": dict(self.received), "answered": dict(self.answered),
                "faults": {k: dict(v) for k, v in self.faults.items()}, "total": self.total,
                "batch_lines": self.batch_lines,
                "max_in_flight": self.max_in_flight}


class _Sentences:
    """Tatoeba sentences per ISO 639-3 code, loaded lazily; names from the language registry."""

    def __init__(self, data_dir: Path):
        self.dir = data_dir / "tatoeba"
        self.cache: dict[str, list[str]] = {}
        from workbench.languages import load_registry

        registry = load_registry()
        names = {lang.name: (lang.tatoeba or "eng") for lang in registry}
        names["English"] = "eng"
        self.names = names
        self.neighbours: dict[str, str] = {}  # Tatoeba code -> its dominant neighbour's
        for lang in registry:
            options = [registry.get(c) for c in registry.confusables(lang.code)]
            options = [o for o in options if o.tatoeba and (self.dir / f"tatoeba.{o.tatoeba}-eng.{o.tatoeba}").is_file()]
            if lang.tatoeba and options:
                self.neighbours[lang.tatoeba] = max(options, key=lambda o: o.cc100_tokens_m or 0).tatoeba
        self.pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b")

    def language_of(self, text: str) -> str:
        match = self.pattern.search(text)
        return self.names[match.group(1)] if match else "eng"

    def target_of(self, prompt: str, key: str, default: str) -> str:
        """The language the prompt's line for ``key`` asks to translate "into", else ``default``."""
        line = next((line for line in prompt.splitlines() if line.lstrip().startswith(f'- "{key}":')), "")
        _, into, rest = line.partition(" into ")
        return self.language_of(rest) if into and self.pattern.search(rest) else default

    def get(self, code: str) -> list[str]:
        if code not in self.cache:
            path = self.dir / f"tatoeba.{code}-eng.{code}" if code != "eng" else self.dir / "tatoeba.deu-eng.eng"
            try:
                lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except FileNotFoundError:
                lines = []
            self.cache[code] = lines or self.get("eng") if code != "eng" else lines or ["Hello world."]
        return self.cache[code]


class OpenAIDouble:
    """The server. Use as a context manager (thread in this process) or :meth:`serve_forever`."""

    def __init__(self, data_dir: Path | str, faults: Faults | None = None, *, models: tuple[str, ...] = ("double",),
                 api_key: str | None = None, host: str = "127.0.0.1", port: int = 0, deterministic: bool = False):
        # deterministic: a clean answer depends only on the request and its cache key (not on how
        # many requests came before), so an interrupted-and-resumed run can be compared row by row
        # with an uninterrupted one (tests/test_soak.py).
        self.deterministic = deterministic
        self.sentences = _Sentences(Path(data_dir))
        self.faults = faults or Faults()
        self.models = models
        self.api_key = api_key
        self.host, self.port = host, port
        self.stats = Stats()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task] = set()

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start_async(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def __enter__(self) -> "OpenAIDouble":
        def runner() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start_async())
            self._ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=runner, name="openai-double", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self.rng = random.Random(faults.seed)

    # -- HTTP ------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                method, target, _ = request_line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                reply = await self._route(method, target.split("?")[0], headers, body)
                if reply is None:  # injected dropped connection
                    break
                status, payload, extra = reply
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                content_type = extra.pop("content-type", "application/json")
                head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}", f"content-type: {content_type}",
                        f"content-length: {len(data)}"] + [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _route(self, method: str, path: str, headers: dict[str, str], body: bytes):
        if path == "/_stats":
            import resource

            usage = resource.getrusage(resource.RUSAGE_SELF)
            return 200, {**self.stats.as_json(), "cpu_s": usage.ru_utime + usage.ru_stime}, {}
        if path == "/_faults" and method == "POST":
            self.set_faults(Faults(**json.loads(body)))
            return 200, asdict(self.faults), {}
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, _error("Incorrect API key provided", "invalid_api_key"), {}
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "double"} for m in self.models]}, {}
        if path == "/v1/chat/completions" and method == "POST":
            return await self._chat(headers, body)
        if path == "/v1/files" and method == "POST":
            return 200, self._upload(headers, body), {}
        match = re.fullmatch(r"/v1/files/([\w-]+)(/content)?", path)
        if match and match.group(1) in self.files:
            record = self.files[match.group(1)]
            return (200, record["data"], {}) if match.group(2) else (200, record["object"], {})
        if path == "/v1/batches" and method == "POST":
            return 200, self._create_batch(json.loads(body)), {}
        match = re.fullmatch(r"/v1/batches/([\w-]+)", path)
        if match and match.group(1) in self.batches:
            return 200, self.batches[match.group(1)], {}
        return 404, _error(f"no route {method} {path}", "not_found"), {}

    # -- chat completions --------------------------------------------------------------------
    def _draw_fault(self, key: str, allowed: tuple[str, ...] = FAULT_NAMES) -> str | None:
        with self._lock:
            faults = self.faults
            if faults.max_faults_per_key is not None:
                done = sum(self.stats.faults[name][key] for name in FAULT_NAMES)
                if done >= faults.max_faults_per_key:
                    return None
            for name in allowed:
                rate = faults.rate(name)
                if rate and self.rng.random() < rate:
                    self.stats.faults[name][key] += 1
                    return name
        return None

    async def _chat(self, headers: dict[str, str], body: bytes):
        try:
            request = json.loads(body)
        except json.JSONDecodeError:
            return 400, _error("body is not JSON", "invalid_request_error"), {}
        key = headers.get("x-workbench-key") or hashlib.sha256(body).hexdigest()[:16]
        with self._lock:
            self.stats.received[key] += 1
            self.stats.total += 1
        if self.models and request.get("model") not in self.models:
            return 404, _error(f"The model '{request.get('model')}' does not exist", "model_not_found"), {}
        with self._lock:
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            return await self._answer(key, request)
        finally:
            with self._lock:
                self.stats.in_flight -= 1

    async def _answer(self, key: str, request: dict[str, Any]):
        fault = self._draw_fault(key)
        faults = self.faults
        if faults.latency:
            await asyncio.sleep(faults.latency)
        if fault == "429":
            return 429, _error("Rate limit reached", "rate_limit_exceeded"), {
                "retry-after": f"{faults.retry_after:g}", "retry-after-ms": str(int(faults.retry_after * 1000))}
        if fault == "500":
            return 500, _error("The server had an error", "server_error"), {}
        if fault == "drop":
            return None
        if fault == "html":
            return 200, b"<html><body><h1>502 Bad Gateway</h1><p>upstream timed out</p></body></html>", {
                "content-type": faults.html_content_type}
        if fault == "slow":
            await asyncio.sleep(faults.slow_seconds)
        payload = self.completion(request, fault, key)
        with self._lock:
            self.stats.answered[key] += 1
        return 200, payload, {}

    def completion(self, request: dict[str, Any], fault: str | None = None, key: str = "") -> dict[str, Any]:
        """A chat.completion object answering ``request`` (``fault`` shapes the content)."""
        prompt = "\n".join(str(m.get("content", "")) for m in request.get("messages", []))
        keys = _requested_keys(request, prompt)
        code = self.sentences.language_of(prompt)
        if fault == "wrong_language":
            kind = self.faults.wrong_language_as
            if kind == "neighbour" and code in self.sentences.neighbours:
                code = self.sentences.neighbours[code]
            elif kind == "other":
                code = "tur" if code == "fin" else "fin"
            else:
                code = "deu" if code == "eng" else "eng"
        salt = key if self.deterministic else str(self.stats.total)
        rng = random.Random(hashlib.sha256(prompt.encode() + salt.encode()).digest())
        answer: dict[str, Any] = {}
        for key in keys:
            # a key the prompt asks for "into" another language (bitext's S2, S3) is answered in that one
            pool = self.sentences.get(code if fault == "wrong_language" else self.sentences.target_of(prompt, key, code))
            if key == "tasks":
                answer[key] = [rng.choice(pool) for _ in range(20)]
            elif key in ("positive_document", "hard_negative_document", "input_text") or "document" in key:
                answer[key] = " ".join(rng.choice(pool) for _ in range(rng.randint(3, 6)))
            else:
                answer[key] = rng.choice(pool)
        content = json.dumps(answer, ensure_ascii=False)
        if fault == "truncated":
            content = content[: max(1, len(content) // 2)]
        elif fault == "malformed":
            content = "Sure! Here is the example: {" + content[1:].replace('"', "'", 4)
        return {
            "id": f"chatcmpl-{rng.getrandbits(48):x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "double"),
            "choices": [{"index": 0, "finish_reason": "length" if fault == "truncated" else "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": max(1, len(content) // 4),
                      "total_tokens": max(1, len(prompt) // 4) + max(1, len(content) // 4)},
        }

    # -- files and batches -------------------------------------------------------------------
    def _upload(self, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        boundary = headers.get("content-type", "").split("boundary=")[-1].strip('"').encode()
        data, filename, purpose = b"", "upload.jsonl", "batch"
        for part in body.split(b"--" + boundary):
            head, _, content = part.partition(b"\r\n\r\n")
            content = content.removesuffix(b"\r\n")
            if b'name="file"' in head:
                data = content
                found = re.search(rb'filename="([^"]*)"', head)
                filename = found.group(1).decode() if found else filename
            elif b'name="purpose"' in head:
                purpose = content.decode()
        return self._store_file(data, filename, purpose)

    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1:06d}"
        obj = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[file_id] = {"object": obj, "data": data}
        return obj

    def _create_batch(self, request: dict[str, Any]) -> dict[str, Any]:
        batch_id = f"batch_{len(self.batches) + 1:06d}"
        lines = self.files[request["input_file_id"]]["data"].decode().splitlines()
        batch = {"id": batch_id, "object": "batch", "endpoint": request.get("endpoint"), "errors": None,
                 "input_file_id": request["input_file_id"], "completion_window": request.get("completion_window", "24h"),
                 "status": "in_progress", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
        self.batches[batch_id] = batch
        task = asyncio.get_running_loop().create_task(self._run_batch(batch, lines))
        self._tasks.add(task)
        return batch

    async def _run_batch(self, batch: dict[str, Any], lines: list[str]) -> None:
        out, err = [], []
        for line in lines:
            if not line.strip():
                continue
            item = json.loads(line)
            key = item["custom_id"]
            with self._lock:
                self.stats.received[key] += 1
                self.stats.total += 1
                self.stats.batch_lines += 1
            fault = self._draw_fault(key, ("500", "truncated", "malformed", "wrong_language"))
            if fault == "500":
                err.append({"id": f"req_{len(err)}", "custom_id": key, "error": None,
                            "response": {"status_code": 500, "body": _error("server error", "server_error")}})
                batch["request_counts"]["failed"] += 1
                continue
            body = self.completion(item["body"], fault, key)
            with self._lock:
                self.stats.answered[key] += 1
            out.append({"id": f"req_{len(out)}", "custom_id": key, "error": None,
                        "response": {"status_code": 200, "request_id": body["id"], "body": body}})
            batch["request_counts"]["completed"] += 1
            await asyncio.sleep(0)
        if out:
            batch["output_file_id"] = self._store_file(
                "".join(json.dumps(r) + "\n" for r in out).encode(), "output.jsonl", "batch_output")["id"]
        if err:
            batch["error_file_id"] = self._store_file(
                "".join(json.dumps(r) + "\n" for r in err).encode(), "errors.jsonl", "batch_output")["id"]
        batch["status"] = "completed"
        batch["completed_at"] = int(time.time())


def _requested_keys(request: dict[str, Any], prompt: str) -> list[str]:
    fmt = request.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") or fmt.get("schema")
    if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
        return list(schema["properties"])
    found = sorted((prompt.find(f'"{k}"'), k) for k in KNOWN_KEYS if f'"{k}"' in prompt)
    return [k for _, k in found] or ["text"]


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code, "param": None}}


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error"}


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the OpenAI-compatible TEST DOUBLE (not a model).")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--deterministic", action="store_true", help="answers depend only on the request and its key")
    for spec in fields(Faults):
        parser.add_argument(f"--{spec.name.replace('_', '-')}", type=type(spec.default) if spec.default is not None else int,
                            default=spec.default)
    args = parser.parse_args()
    faults = Faults(**{spec.name: getattr(args, spec.name) for spec in fields(Faults)})
    double = OpenAIDouble(args.data, faults, models=tuple(args.model or ["double"]), port=args.port,
                          deterministic=args.deterministic)

    async def serve() -> None:
        await double.start_async()
        print(f"listening {double.base_url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
