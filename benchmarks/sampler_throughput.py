"""Batch sampler cost: milliseconds per global batch of ``train.data.BatchSampler`` (no record and no
text twice in a batch), against the baseline measured in the same run: the same weighted epoch
order cut into batches with no text rule (what the sampler did before it compared texts).

Scenarios on synthetic records (texts are short strings: the sampler compares 8-byte digests, so
text length does not change the cost): every text distinct; a share of classification records whose
positive is one of a few labels (repeats the sampler must keep apart); every record sharing one label
(no batch can avoid a repeat). Also the memory the sampler keeps per record and the batches it
counted as holding a repeated text.

Run:  PYTHONPATH=. python benchmarks/sampler_throughput.py [--records 500000] [--batch 2048] [--steps 30]
Other processes on the machine share the cores: compare ratios, not absolute numbers, across runs.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402

from workbench.train.data import BatchSampler  # noqa: E402


def records(n: int, label_share: float, labels: int, seed: int = 0) -> pl.DataFrame:
    rng = random.Random(seed)
    positives = [f"label {rng.randrange(labels)}" if rng.random() < label_share else f"passage {i}" for i in range(n)]
    return pl.DataFrame({"query": [f"Instruct: t\nQuery: q{i}" for i in range(n)], "positive": positives,
                         "negative": [f"negative {i}" for i in range(n)], "language": ["en"] * n,
                         "family": ["short_long"] * n, "weight": [1.0] * n})


def baseline_ms(table: pl.DataFrame, batch: int, steps: int) -> float:
    """The weighted epoch order cut into batches, no text comparison."""
    sampler = BatchSampler(table.select(["language", "family", "weight"]), batch, random.Random(1))
    queue: list[int] = []
    start = time.perf_counter()
    for _ in range(steps):
        while len(queue) < batch:
            queue += sampler._epoch_order(sampler.usable)
        queue = queue[batch:]
    return (time.perf_counter() - start) / steps * 1000


def sampler_run(table: pl.DataFrame, batch: int, steps: int) -> tuple[float, float, int, float]:
    """(ms per batch, seconds to build, repeated-text batches, bytes kept per record)."""
    tracemalloc.start()
    start = time.perf_counter()
    sampler = BatchSampler(table, batch, random.Random(1))
    build = time.perf_counter() - start
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    start = time.perf_counter()
    for _ in range(steps):
        assert len(next(sampler)) == batch
    return (time.perf_counter() - start) / steps * 1000, build, sampler.repeated_text_batches, kept / table.height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="a few seconds on tiny sizes: checks the script runs (no figures)")
    args = parser.parse_args()
    if args.smoke:
        args.records, args.batch, args.steps = 2_000, 64, 2
    scenarios = [("every text distinct", 0.0, 1), ("24% share 50 labels", 0.24, 50), ("every record one label", 1.0, 1)]
    print(f"{args.records:,} records, batch {args.batch}, {args.steps} batches per scenario\n")
    print("| scenario | baseline ms/batch | sampler ms/batch | ratio | build s | bytes/record | repeated batches |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, share, labels in scenarios:
        table = records(args.records, share, labels)
        base = baseline_ms(table, args.batch, args.steps)
        ms, build, repeated, per_record = sampler_run(table, args.batch, args.steps)
        print(f"| {name} | {base:.1f} | {ms:.1f} | {ms / base:.1f}x | {build:.2f} | {per_record:.0f} | "
              f"{repeated}/{args.steps} |")


if __name__ == "__main__":
    main()
