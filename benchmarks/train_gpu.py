"""GPU step-time benchmark of the train stage: Mistral-7B shape, random bf16 weights, LoRA r16,
DeepSpeed ZeRO-3 (NCCL), non-reentrant gradient checkpointing, InfoNCE with one hard negative.

Per batch size B (queries of ``--query-length`` tokens, 2B documents of ``--doc-length`` tokens,
512 by default as in the recipe's max length) it records seconds per step, tokens/s, peak GPU
memory and MFU, and prints a table; ``--out FILE.json`` keeps the rows.

MFU counts model FLOPs only (no recomputation): forward 2·N·T plus attention 4·L·s²·d per sequence;
backward through frozen weights with LoRA ≈ the forward's matmuls again for activation gradients
(2·N·T) plus 2x the attention forward. Peak: ``--peak-tflops`` (H100 SXM dense bf16: 989).

It uses the stage's own pieces (``workbench.train.model.Embedder``, peft LoRA config,
``workbench.train.zero.build_engine`` / ``workbench.train.distributed.setup_distributed``, ``workbench.train.loss.info_nce``)
on random token ids, so the numbers are those of ``workbench train``'s step.

    python benchmarks/train_gpu.py --batch-sizes 8,16,32 --stage zero3 --out train_gpu.json
    python benchmarks/train_gpu.py --dry-run        # CPU, gloo, tiny shape: checks the script runs
    torchrun --nproc_per_node 8 benchmarks/train_gpu.py --batch-sizes 64,128   # several GPUs

The numbers in docs/train.md from this script come from a lent GPU; where none was lent, the
docs say so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build(args, device, dtype):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import MistralConfig, MistralModel

    from workbench.train.model import Embedder

    if args.dry_run:
        config = MistralConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    else:  # Mistral-7B-v0.1 shape
        config = MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                               sliding_window=None)
    config.use_cache = False
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in bf16 directly: no 28 GB fp32 copy of the 7B shape
    try:
        with torch.device(device):
            backbone = MistralModel(config)
    finally:
        torch.set_default_dtype(default)
    backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    backbone = get_peft_model(backbone, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1, target_modules="all-linear"))
    return Embedder(backbone, "last_token"), config


def model_flops(config, n_params: int, batch: int, q_len: int, d_len: int) -> float:
    layers, hidden = config.num_hidden_layers, config.hidden_size
    tokens = batch * (q_len + 2 * d_len)
    attn_fwd = 4 * layers * hidden * (batch * q_len**2 + 2 * batch * d_len**2)
    return 2 * n_params * tokens + attn_fwd + 2 * n_params * tokens + 2 * attn_fwd


def main() -> int:
    parser = argparse.ArgumentParser(description="train-stage GPU benchmark (see module docstring)")
    parser.add_argument("--batch-sizes", default="8,16,32")
    parser.add_argument("--stage", default="zero3", choices=["zero2", "zero3", "none"])
    parser.add_argument("--query-length", type=int, default=512)
    parser.add_argument("--doc-length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per batch size (after 2 warm-up)")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--dry-run", "--smoke", action="store_true", help="CPU + gloo + tiny shape, 1 timed step (checks the script runs)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    if args.dry_run:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        torch.set_num_threads(1)
        args.query_length, args.doc_length, args.steps = 16, 32, 1
        args.batch_sizes = "2,4"
    elif not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on CPU", file=sys.stderr)
        return 2

    from workbench.config import TrainSection
    from workbench.train.distributed import setup_distributed
    from workbench.train.loss import info_nce
    from workbench.train.zero import build_engine

    dist = setup_distributed(args.stage != "none")
    cuda = dist.device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        embedder, config = build(args, dist.device, dtype)
        n_params = sum(p.numel() for p in embedder.parameters())
        local = batch // dist.world_size
        tc = TrainSection(model="random", deepspeed=args.stage, batch_size=batch, steps=1000, warmup_steps=100,
                          precision="bf16" if cuda else "fp32", max_length=max(args.query_length, args.doc_length))

        class Loaded:  # what build_engine reads
            pass

        loaded = Loaded()
        loaded.embedder = embedder
        row = {"stage": args.stage, "gpus": dist.world_size, "batch": batch,
               "query_len": args.query_length, "doc_len": args.doc_length, "device": str(dist.device)}
        try:
            engine, opt, sched = build_engine(tc, loaded, dist, bf16=cuda)
            gen = torch.Generator(device="cpu").manual_seed(1)

            def ids(n, length):
                x = torch.randint(3, config.vocab_size, (n, length), generator=gen).to(dist.device)
                return x, torch.ones_like(x)

            def step():
                q = engine(*ids(local, args.query_length))
                d = engine(*ids(2 * local, args.doc_length))
                loss = info_nce(q, d[:local], d[local:], temperature=0.02)
                if opt is None:
                    engine.backward(loss)
                    engine.step()
                else:
                    loss.backward()
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                return float(loss)

            for _ in range(1 if args.dry_run else 2):
                step()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            for _ in range(args.steps):
                loss = step()
            if cuda:
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - started) / args.steps
            tokens = batch * (args.query_length + 2 * args.doc_length)
            flops = model_flops(config, n_params, batch, args.query_length, args.doc_length)
            row.update(
                s_per_step=round(seconds, 3),
                tokens_per_s=round(tokens / seconds, 1),
                peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None,
                mfu_pct=round(100 * flops / seconds / (args.peak_tflops * 1e12 * dist.world_size), 1) if cuda else None,
                loss=round(loss, 4),
            )
            if hasattr(engine, "destroy"):
                engine.destroy()
        except torch.OutOfMemoryError:
            row.update(s_per_step=None, tokens_per_s=None, peak_gib="OOM", mfu_pct=None)
        rows.append(row)
        del embedder
        if cuda:
            torch.cuda.empty_cache()
    if dist.rank == 0:
        header = ["stage", "gpus", "batch", "query_len", "doc_len", "s_per_step", "tokens_per_s", "peak_gib", "mfu_pct"]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(str(row.get(k)) for k in header) + " |")
        if args.out:
            args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
