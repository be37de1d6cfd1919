"""A synthetic retrieval corpus in BEIR layout (tests and benchmarks of the sharded evaluation).

Passages are a few distinct English words drawn from the MiniLM tokenizer's vocabulary (one token
each, so 20,000 passages encode in about a minute on one CPU core), every passage text unique; each
query repeats two words of one passage plus one random word and has that passage as its only
relevant document. Deterministic for a seed. This is a test-data builder, not part of the pipeline.

Example::

    folder = write_synthetic_beir(tmp_path / "synthetic", passages=20_000, queries=200)
    # workbench eval RUN --create --model minilm --task beir --data-dir <folder>
"""

from __future__ import annotations

import json
import random
from pathlib import Path


def _vocabulary() -> list[str]:
    from workbench.encoder import minilm_path

    words = (minilm_path() / "vocab.txt").read_text(encoding="utf-8").split()
    return sorted({w for w in words if w.isascii() and w.isalpha() and len(w) > 3})


def write_synthetic_beir(folder: Path, *, passages: int = 20_000, queries: int = 200, words: int = 3,
                         seed: int = 0) -> Path:
    """Write ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv`` into ``folder``; returns it."""
    rng = random.Random(seed)
    vocabulary = _vocabulary()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    texts: list[str] = []
    seen: set[str] = set()
    while len(texts) < passages:
        text = " ".join(rng.sample(vocabulary, words))
        if text not in seen:
            seen.add(text)
            texts.append(text)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    targets = rng.sample(range(passages), queries)
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as handle:
        for q, doc in enumerate(targets):
            kept = rng.sample(texts[doc].split(), 2)
            handle.write(json.dumps({"_id": f"q{q}", "text": " ".join([*kept, rng.choice(vocabulary)])}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"q{q}\td{doc}\t1\n" for q, doc in enumerate(targets))
    return folder


__all__ = ["write_synthetic_beir"]
