"""e5-mistral-7b encoding throughput per GPU (bf16, max_length 512): the number `--estimate` needs.

Ready to run on a GPU machine (not yet run: no GPU was lent to the task that wrote it). Two modes:

* ``--model PATH`` (a local copy of intfloat/e5-mistral-7b-instruct, or any model folder): the real
  model through the workbench's one encoder contract (:class:`WorkbenchEncoder`: the e5-mistral
  preset, bf16 on CUDA, EOS appended, last-token pooling, length-sorted batches) on real passages —
  MIRACL passages from ``--data-dir`` (a MIRACL-format folder; default: the shipped yo subset) —
  so the figure includes tokenising and the contract's overheads;
* ``--shape-only``: Mistral-7B's architecture with random bf16 weights (no download), fed token ids
  of ``--tokens`` per passage; the pure model cost, for comparison with the device README's 137
  passages/s at 256 tokens.

For each batch size: warm-up, then ``--seconds`` of encoding; passages/s and tokens/s per GPU and
peak GPU memory. Writes the table as Markdown to ``--out`` (default ``eval_gpu_e5_mistral.md``) and
prints it. One GPU per process; for N GPUs the sharded eval's rate is about N times this (each
rank encodes its own shards, nothing is exchanged but small files).

    python benchmarks/eval_gpu_e5_mistral.py --model /models/e5-mistral-7b-instruct --data-dir DIR/miracl -l en
    python benchmarks/eval_gpu_e5_mistral.py --shape-only --tokens 131 --tokens 512
    python benchmarks/eval_gpu_e5_mistral.py --smoke          # tiny random model, CPU or GPU, seconds
    python benchmarks/eval_gpu_e5_mistral.py --smoke --model "$(python -c 'from workbench.encoder import minilm_path; print(minilm_path())')"
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
YO_SUBSET = REPO / "examples" / "data" / "miracl-yo"


def passages(data_dir: Path, language: str, limit: int) -> list[str]:
    folder = data_dir / "corpus" / language
    corpus = next(folder.glob("corpus.jsonl*"))
    opener = gzip.open if corpus.suffix == ".gz" else open
    texts = []
    with opener(corpus, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            texts.append(f"{record.get('title') or ''} {record.get('text') or ''}".strip())
            if len(texts) >= limit:
                break
    return texts


def timed(step, seconds: float, sync) -> tuple[int, float]:
    """Run ``step()`` (returns passages done) repeatedly for about ``seconds``; (passages, seconds)."""
    step()
    sync()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += step()
    sync()
    return done, time.perf_counter() - start


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="local model folder (e.g. e5-mistral-7b-instruct)")
    parser.add_argument("--shape-only", action="store_true", help="Mistral-7B shape, random bf16 weights")
    parser.add_argument("--data-dir", type=Path, default=YO_SUBSET, help="MIRACL-format folder with real passages")
    parser.add_argument("-l", "--language", default="yo")
    parser.add_argument("--passages", type=int, default=4096, help="passages read for --model")
    parser.add_argument("--tokens", type=int, action="append", help="--shape-only: tokens per passage (repeatable)")
    parser.add_argument("--batch-size", type=int, action="append", help="repeatable (default 16, 32, 64)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("eval_gpu_e5_mistral.md"))
    parser.add_argument("--smoke", action="store_true", help="2 s per setting, batch 4, any device; without --model a 2-layer random model")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda and not args.smoke:
        raise SystemExit("error: no CUDA device (this script measures GPUs; --smoke runs anywhere)")
    batches = args.batch_size or ([4] if args.smoke else [16, 32, 64])
    seconds = 2.0 if args.smoke else args.seconds
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = []
    if args.model:
        from workbench.eval.encoders import WorkbenchEncoder

        texts = passages(args.data_dir, args.language, args.passages)
        encoder = WorkbenchEncoder(args.model, cache_root=None, device=device, show_progress=False)
        spec = replace(encoder.spec, max_length=args.max_length)  # the measurement's max_length, whatever the folder says
        encoder.spec = spec
        encoder.backend.spec = spec
        tokenizer = getattr(encoder.backend, "tokenizer", None) or getattr(encoder.backend.model, "tokenizer", None)
        lengths = [min(args.max_length, len(ids) + 1) for ids in tokenizer(texts)["input_ids"]] if tokenizer else []
        mean_tokens = sum(lengths) / len(lengths) if lengths else float("nan")
        for batch in batches:
            encoder.batch_size = batch
            cursor = [0]

            def step() -> int:
                chunk = [texts[(cursor[0] + i) % len(texts)] for i in range(batch * 8)]
                cursor[0] += len(chunk)
                encoder.encode_texts(chunk)
                return len(chunk)

            if cuda:
                torch.cuda.reset_peak_memory_stats()
            done, took = timed(step, seconds, sync)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
            rows.append((f"{args.model.name} ({args.language} passages)", batch, mean_tokens, done / took,
                         done * mean_tokens / took, peak))
    else:
        from transformers import MistralConfig, MistralModel

        if args.smoke:
            config = MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=1000)
        else:  # Mistral-7B-v0.1's shape
            config = MistralConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                                   num_key_value_heads=8, vocab_size=32000, max_position_embeddings=32768)
        dtype = torch.bfloat16 if cuda else torch.float32
        model = MistralModel(config).to(device=device, dtype=dtype).eval()
        for tokens in args.tokens or ([16] if args.smoke else [131, 256, 512]):
            for batch in batches:
                ids = torch.randint(3, config.vocab_size, (batch, tokens), device=device)
                mask = torch.ones_like(ids)

                def step() -> int:
                    with torch.inference_mode():
                        model(input_ids=ids, attention_mask=mask)
                    return batch

                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                done, took = timed(step, seconds, sync)
                peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
                rows.append(("Mistral-7B shape, random weights" if not args.smoke else "smoke: 2-layer random Mistral",
                             batch, float(tokens), done / took, done * tokens / took, peak))
    name = torch.cuda.get_device_name() if cuda else "CPU"
    lines = [f"# Encoding throughput per GPU: {name}, {'bf16' if cuda else 'fp32'}, max_length {args.max_length}",
             "", "| model | batch | tokens/passage | passages/s | tokens/s | peak GiB |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {m} | {b} | {t:.0f} | {p:,.1f} | {tk:,.0f} | {g:.1f} |" for m, b, t, p, tk, g in rows]
    lines += ["", "Use with: workbench eval RUN --estimate --throughput <passages/s> --throughput-tokens <tokens/passage>",
              f"(host {os.uname().nodename}, torch {torch.__version__})"]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
