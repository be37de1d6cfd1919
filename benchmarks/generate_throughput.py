"""Throughput of the generate engine against the OpenAI TEST DOUBLE, and SmolLM2 tokens/s.

Setup: the double runs as its own process with a fixed latency L per request and injected faults
(429 with Retry-After and 500, half each); the engine sends with concurrency C. The bound is C/L
requests per second. Measured in the same run:

- baseline: bare ``AsyncOpenAI`` calls at concurrency C, no faults, no engine (what the client
  library alone achieves on this machine);
- engine: ``run_generate`` over a plan of >= N slots (brainstorm + examples), with faults.

Reported: HTTP requests/s and slots/s as fractions of C/L and of the baseline, lost and duplicated
slots (from the double's per-key counters), client CPU per request, RSS over the run, and the
embedded SmolLM2 server's completion tokens/s (n_threads=1, one request at a time).

    PYTHONPATH=. python benchmarks/generate_throughput.py --slots 10000 --concurrency 64 --latency 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LANGUAGES = ["de", "fr", "es", "it", "pt", "ru", "sw", "ja", "ar", "hi", "tr", "nl"]


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_double(latency: float, fault_rate: float, data: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "workbench.testing.openai_double", "--data", str(data), "--latency", str(latency),
               "--rate-429", str(fault_rate / 2), "--rate-500", str(fault_rate / 2), "--retry-after", "0.05",
               "--model", "double"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    line = process.stdout.readline().strip()
    return process, line.split()[-1]


async def baseline(base_url: str, concurrency: int, requests: int) -> float:
    import openai

    from workbench.generate.client import LANE_WIDTH

    # the same transport as the engine: one small connection pool per LANE_WIDTH workers
    lanes = [openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0,
                                http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=LANE_WIDTH + 2)))
             for _ in range(-(-concurrency // LANE_WIDTH))]
    body = {"model": "double", "messages": [{"role": "user", "content": 'Write "S1", "S2", "S3" in German.'}]}
    counter = iter(range(requests))

    async def worker(lane: int) -> None:
        for index in counter:
            await lanes[lane % len(lanes)].post("/chat/completions", cast_to=object, body=body,
                                                options={"headers": {"X-Workbench-Key": f"baseline-{index}"}})

    started = time.perf_counter()
    await asyncio.gather(*(worker(lane) for lane in range(concurrency)))
    elapsed = time.perf_counter() - started
    for client in lanes:
        await client.close()
    return requests / elapsed


def engine_run(base_url: str, concurrency: int, slots: int, root: Path) -> dict:
    from workbench.generate.stage import run_generate
    from workbench.languages import load_registry
    from workbench.plan import run_plan
    from workbench.runconfig import resolve_run_config
    from workbench.tables import GENERATED

    quota = -(-slots // len(LANGUAGES))
    run, config = resolve_run_config(root, None, {
        "run": {"languages": LANGUAGES, "quota": quota},
        "generate": {"base_url": base_url, "model": "double", "concurrency": concurrency, "timeout_s": 30,
                     "backoff_base_s": 0.05, "backoff_max_s": 2.0, "max_retries": 10},
    })
    registry = load_registry()
    run_plan(run, config, registry)
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            samples.append(rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    cpu_before, started = cpu_s(), time.perf_counter()
    sampler.start()
    result = run_generate(run, config, registry)
    elapsed = time.perf_counter() - started
    stop.set()
    cpu = cpu_s() - cpu_before
    import polars as pl

    table = pl.concat([run.read_table("generated", code, GENERATED) for code in LANGUAGES])
    return {"elapsed": elapsed, "cpu": cpu, "rss": samples, "stats": result.stats, "table": table}


def smollm_tokens_per_second(requests: int) -> tuple[float, int]:
    import openai

    from workbench.generate.local import MODEL_ALIAS, LocalServer

    server = LocalServer().start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=300)
        tokens, seconds = 0, 0.0
        for index in range(requests):
            started = time.perf_counter()
            reply = client.chat.completions.create(
                model=MODEL_ALIAS, max_tokens=200, temperature=1.0,
                messages=[{"role": "user", "content": f"Write a short story about a river number {index}."}])
            seconds += time.perf_counter() - started
            tokens += reply.usage.completion_tokens
        return tokens / seconds, tokens
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--baseline-requests", type=int, default=3000)
    parser.add_argument("--smollm-requests", type=int, default=4)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--smoke", action="store_true", help="a few seconds on tiny sizes: checks the script runs (no figures)")
    args = parser.parse_args()
    if args.smoke:  # no SmolLM2 server: starting it alone takes longer than the whole smoke run
        args.slots, args.concurrency, args.latency, args.baseline_requests, args.smollm_requests = 48, 8, 0.01, 40, 0

    bound = args.concurrency / args.latency
    process, base_url = start_double(args.latency, 0.0, args.data)
    try:
        base_rate = asyncio.run(baseline(base_url, args.concurrency, args.baseline_requests))
    finally:
        process.terminate()
        process.wait()

    process, base_url = start_double(args.latency, args.fault_rate, args.data)
    root = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        measured = engine_run(base_url, args.concurrency, args.slots, root / "run")
        counters = httpx.get(base_url.removesuffix("/v1") + "/_stats", timeout=30).json()
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(root, ignore_errors=True)

    table = measured["table"]
    stats = measured["stats"]
    answered = counters["answered"]
    http_requests = counters["total"]
    faults = {name: sum(per_key.values()) for name, per_key in counters["faults"].items()}
    slots = table.height
    ok = int((table["status"] == "ok").sum())
    lost = slots - ok
    duplicated = sum(1 for n in answered.values() if n > 1)
    http_rate = http_requests / measured["elapsed"]
    rss = measured["rss"] or [rss_mib()]
    third = max(1, len(rss) // 3)
    rows = [
        ("bound C/L (req/s)", f"{bound:.1f}", "1.00"),
        ("baseline: bare AsyncOpenAI, same pools, no faults", f"{base_rate:.1f}", f"{base_rate / bound:.2f}"),
        ("engine: HTTP requests/s incl. retried faults", f"{http_rate:.1f}", f"{http_rate / bound:.2f}"),
        ("engine: finished requests (slots + brainstorms)/s", f"{len(answered) / measured['elapsed']:.1f}",
         f"{len(answered) / measured['elapsed'] / bound:.2f}"),
        ("engine vs baseline (HTTP req/s)", "", f"{http_rate / base_rate:.2f}"),
    ]
    print(f"\nC={args.concurrency}  L={args.latency * 1000:.0f} ms  slots={slots}  HTTP requests={http_requests}  "
          f"injected faults={faults}  wall={measured['elapsed']:.1f} s")
    print(f"{'measure':<48} {'value':>10} {'ratio to bound':>15}")
    for name, value, ratio in rows:
        print(f"{name:<48} {value:>10} {ratio:>15}")
    print(f"{'slots ok / planned':<48} {ok:>5}/{slots:<5}")
    print(f"{'lost slots':<48} {lost:>10}")
    print(f"{'duplicated (keys answered more than once)':<48} {duplicated:>10}")
    print(f"{'client CPU per HTTP request (ms)':<48} {measured['cpu'] / http_requests * 1000:>10.2f}")
    print(f"{'test double CPU per HTTP request (ms)':<48} {counters['cpu_s'] / http_requests * 1000:>10.2f}")
    print(f"{'machine load average at the end (1 min)':<48} {os.getloadavg()[0]:>10.2f}  ({os.cpu_count()} CPUs)")
    print(f"{'client RSS first/middle/last third (MiB)':<48} "
          f"{sum(rss[:third]) / third:>6.0f} / {sum(rss[third:2 * third]) / max(1, len(rss[third:2 * third])):.0f} / "
          f"{sum(rss[-third:]) / third:.0f}  (max {max(rss):.0f})")
    print(f"{'engine transport errors seen':<48} {json.dumps(stats['errors'])}")
    if args.smollm_requests:
        tps, tokens = smollm_tokens_per_second(args.smollm_requests)
        print(f"{'SmolLM2-135M embedded server (tokens/s)':<48} {tps:>10.1f}  ({tokens} completion tokens, "
              f"{args.smollm_requests} sequential requests, n_threads=1)")


if __name__ == "__main__":
    main()
