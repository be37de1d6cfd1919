"""Scale: 93 languages × N examples of generation against the test double, and filter + audit at 500k.

(a) generation: ``workbench run`` stages plan → generate for all 93 generation languages with
``--per-language`` examples each (default 1,000), against the OpenAI TEST DOUBLE
(:mod:`workbench.testing.openai_double`) running as its own process with a fixed latency per
request. Reports wall time, HTTP requests/s and finished slots/s, the pipeline process's RSS
sampled every 0.5 s (peak in the first, middle and last third of the run: flat memory means the
three are close), and lost / duplicated slots (planned slot ids vs generated/ rows; request keys
the double answered more than once).

(b) filter + audit: a run directory with ``--examples`` synthetic-shaped generated rows (default
500,000; real Tatoeba/XQuAD text per language via :mod:`workbench.testing.samples`) spread over
every generation language that has Tatoeba text; then ``workbench filter`` and ``workbench audit``
as subprocesses. Reports each one's wall time, examples/s and peak RSS of its whole process tree
(the filter's worker pool included).

Run:  PYTHONPATH=. python benchmarks/scale.py [--per-language 1000] [--examples 500000]
      [--latency 0.05] [--concurrency 64] [--skip-generate] [--skip-filter] [--keep DIR]
Other processes share this machine's cores: the figures are for the load at the time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ENV = dict(os.environ, PYTHONPATH=str(REPO), OPENAI_API_KEY="scale-benchmark")


class TreeSampler:
    """Samples the summed RSS (MiB) of a process and its descendants every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.perf_counter()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            try:
                for proc in [self.root, *self.root.children(recursive=True)]:
                    try:
                        total += proc.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                break
            if total:
                self.samples.append((time.perf_counter() - self.started, total / 2**20))
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self) -> float:
        return max((mib for _, mib in self.samples), default=0.0)

    def thirds(self) -> list[float]:
        if not self.samples:
            return [0.0, 0.0, 0.0]
        end = self.samples[-1][0] or 1.0
        return [max((mib for t, mib in self.samples if k * end / 3 <= t <= (k + 1) * end / 3), default=0.0)
                for k in range(3)]


def _timed(command: list[str], log: Path) -> tuple[float, TreeSampler]:
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=ENV, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        with TreeSampler(process.pid) as sampler:
            code = process.wait()
    elapsed = time.perf_counter() - started
    if code != 0:
        sys.exit(f"{' '.join(command)} exited {code}; see {log}:\n{log.read_text()[-3000:]}")
    return elapsed, sampler


def generation(args: argparse.Namespace, root: Path) -> None:
    import polars as pl

    double = subprocess.Popen(
        [sys.executable, "-m", "workbench.testing.openai_double", "--data", str(args.data), "--latency",
         str(args.latency), "--model", "double"], stdout=subprocess.PIPE, text=True, cwd=REPO, env=ENV)
    try:
        base_url = double.stdout.readline().strip().split()[-1]
        config = root / "scale.toml"
        config.write_text(f"""
[run]
name = "scale"
seed = 5
languages = ["all"]
quota = {args.per_language}

[generate]
base_url = "{base_url}"
model = "double"
structured_output = "json_schema"
concurrency = {args.concurrency}
timeout_s = 30.0
max_retries = 10
backoff_base_s = 0.05
backoff_max_s = 2.0

[pipeline]
stages = ["plan", "generate"]
""")
        run_dir = root / "gen-run"
        elapsed, sampler = _timed([sys.executable, "-m", "workbench.cli", "run", str(config), "--run-dir", str(run_dir)],
                                  root / "generate.log")
        import urllib.request

        stats = json.loads(urllib.request.urlopen(base_url.removesuffix("/v1") + "/_stats").read())
    finally:
        double.terminate()
        double.wait()
    plan = pl.concat([pl.read_parquet(p) for p in sorted((run_dir / "plan").glob("*.parquet"))])
    generated = pl.concat([pl.read_parquet(p) for p in sorted((run_dir / "generated").glob("*.parquet"))])
    planned = set(plan["slot_id"])
    got = generated["slot_id"].to_list()
    lost = len(planned - set(got))
    duplicated = len(got) - len(set(got))
    resent = sum(1 for n in stats["answered"].values() if n > 1)
    languages = plan["language"].n_unique()
    thirds = sampler.thirds()
    print(f"## (a) generation: {languages} languages × {args.per_language} examples against the test double "
          f"(latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency})")
    print()
    print("| measure | value |")
    print("|---|---:|")
    print(f"| planned slots | {len(planned):,} |")
    print(f"| generated rows (ok / failed) | {generated.height:,} ({(generated['status'] == 'ok').sum():,} / "
          f"{(generated['status'] == 'failed').sum():,}) |")
    print(f"| lost slots (planned, not in generated/) | {lost} |")
    print(f"| duplicated slots (in generated/ twice) | {duplicated} |")
    print(f"| request keys answered more than once | {resent} |")
    print(f"| HTTP requests received by the double | {stats['total']:,} |")
    print(f"| wall time, `workbench run` plan+generate (incl. startup) | {elapsed:,.1f} s |")
    print(f"| requests/s | {stats['total'] / elapsed:,.1f} |")
    print(f"| slots/s | {len(planned) / elapsed:,.1f} |")
    print(f"| peak RSS, whole run | {sampler.peak():,.0f} MiB |")
    print(f"| peak RSS per third of the run (first / middle / last) | "
          f"{thirds[0]:,.0f} / {thirds[1]:,.0f} / {thirds[2]:,.0f} MiB |")
    print(f"| peak RSS last / first third | {thirds[2] / max(thirds[0], 1e-9):.2f} |")
    print()


def filtering(args: argparse.Namespace, root: Path) -> None:
    import polars as pl

    from workbench.config import RunConfig
    from workbench.languages import load_registry
    from workbench.run import Run
    from workbench.tables import GENERATED
    from workbench.testing.samples import generated_table, synthetic_rows, tatoeba_sentences, xquad_paragraphs

    registry = load_registry()
    english = tatoeba_sentences(args.data, registry.get("en"))
    languages = []
    for language in registry:
        if language.role == "generate":
            own = tatoeba_sentences(args.data, language)
            if len(own) >= 30:
                languages.append((language.code, own))
    run = Run.create(root / "filter-run")
    run.config_path.write_text(RunConfig().to_toml())  # the CLI reads a run's settings from its run.toml
    rng = random.Random(args.seed)
    per_language, extra = divmod(args.examples, len(languages))
    started = time.perf_counter()
    for index, (code, own) in enumerate(languages):
        n = per_language + (1 if index < extra else 0)
        rows = synthetic_rows(code, own, english, n, rng, xquad_paragraphs(args.data, code) or None)
        run.write_table("generated", code, generated_table(rows), GENERATED)
    build = time.perf_counter() - started
    total = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in (run.root / "generated").glob("*.parquet"))
    filter_s, filter_rss = _timed([sys.executable, "-m", "workbench.cli", "filter", str(run.root)], root / "filter.log")
    audit_s, audit_rss = _timed([sys.executable, "-m", "workbench.cli", "audit", str(run.root)], root / "audit.log")
    accepted = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in (run.root / "accepted").glob("*.parquet"))
    print(f"## (b) filter + audit: {total:,} synthetic-shaped examples in {len(languages)} languages "
          f"(built in {build:.0f} s, not counted)")
    print()
    print("| step | wall time | examples/s | peak RSS (process tree) |")
    print("|---|---:|---:|---:|")
    print(f"| `workbench filter` | {filter_s:,.1f} s | {total / filter_s:,.0f} | {filter_rss.peak():,.0f} MiB |")
    print(f"| `workbench audit` | {audit_s:,.1f} s | {total / audit_s:,.0f} | {audit_rss.peak():,.0f} MiB |")
    print(f"| filter + audit | {filter_s + audit_s:,.1f} s | {total / (filter_s + audit_s):,.0f} | "
          f"{max(filter_rss.peak(), audit_rss.peak()):,.0f} MiB |")
    print()
    print(f"accepted {accepted:,} of {total:,} ({accepted / total:.1%})")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--per-language", type=int, default=1000)
    parser.add_argument("--examples", type=int, default=500_000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the double adds to every answer")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--skip-filter", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep the run directories here instead of a temp dir")
    parser.add_argument("--smoke", action="store_true", help="a few seconds on tiny sizes: checks the script runs (no figures)")
    args = parser.parse_args()
    if args.smoke:
        args.per_language, args.examples, args.latency, args.concurrency = 1, 300, 0.0, 16
    print(f"# scale benchmark: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM (shared with other processes)")
    print()
    with tempfile.TemporaryDirectory(prefix="wb-scale-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if not args.skip_generate:
            generation(args, root)
        if not args.skip_filter:
            filtering(args, root)


if __name__ == "__main__":
    main()
