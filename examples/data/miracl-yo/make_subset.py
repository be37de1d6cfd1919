"""Rebuild this folder from the MIRACL v1.0 files (run from the repository root):

    python examples/data/miracl-yo/make_subset.py SRC_DIR [TOTAL]

SRC_DIR is a MIRACL-format folder with topics.miracl-v1.0-yo-dev.tsv, qrels.miracl-v1.0-yo-dev.tsv
and corpus/yo/corpus.jsonl.gz (the complete 49,043-passage Yoruba corpus). Keeps every dev topic and
qrels row as they are, every judged passage, and a fixed random sample (random.Random(20260101))
of the other passages up to TOTAL passages (default 3000), in corpus order. The gzip header
carries no time stamp, so the output is byte-identical on every run.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import sys
from pathlib import Path

SEED = 20260101


def main(src: Path, total: int = 3000) -> None:
    out = Path(__file__).resolve().parent
    for name in ("topics.miracl-v1.0-yo-dev.tsv", "qrels.miracl-v1.0-yo-dev.tsv"):
        shutil.copyfile(src / name, out / name)
    judged = {line.split()[2] for line in (src / "qrels.miracl-v1.0-yo-dev.tsv").read_text(encoding="utf-8").splitlines() if line.strip()}
    with gzip.open(src / "corpus" / "yo" / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        lines = handle.readlines()
    others = [i for i, line in enumerate(lines) if json.loads(line)["docid"] not in judged]
    sampled = set(random.Random(SEED).sample(others, total - (len(lines) - len(others))))
    keep = [line for i, line in enumerate(lines) if i in sampled or json.loads(line)["docid"] in judged]
    (out / "corpus" / "yo").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus" / "yo" / "corpus.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write("".join(keep).encode("utf-8"))
    print(f"{len(keep)} passages ({len(lines) - len(others)} judged, {len(sampled)} sampled) of {len(lines)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3000)
