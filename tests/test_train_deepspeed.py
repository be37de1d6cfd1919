"""Train stage through DeepSpeed on CPU (gloo, one process) with a tiny random Mistral.

DeepSpeed's CPU accelerator is selected with DS_ACCELERATOR=cpu; the trainer disables the
shared-memory comm op for single-process CPU runs, so no op is JIT-compiled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from conftest import REPO
from train_support import accepted_run, tiny_model, train_config

os.environ.setdefault("DS_ACCELERATOR", "cpu")
torch.set_num_threads(1)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "mistral", shared_data)


def _losses(run) -> list[float]:
    return pl.read_parquet(run.root / "train" / "log.parquet")["loss"].to_list()


def test_zero3_loss_falls_and_exports_real_lora_tensors(tmp_path, tiny, shared_data):
    from safetensors.torch import load_file

    from workbench.train.stage import run_train

    run = accepted_run(tmp_path / "run", shared_data)
    result = run_train(run, train_config(tiny, deepspeed="zero3", steps=24), None)
    losses = _losses(run)
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4, losses
    tensors = load_file(str(run.root / "train" / "adapter" / "adapter_model.safetensors"))
    lora_a = [k for k in tensors if "lora_A" in k]
    assert len(lora_a) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    assert all(tensors[k].numel() > 0 and tensors[k].shape[0] == 16 for k in lora_a)
    assert all(float(tensors[k].abs().sum()) > 0 for k in tensors if "lora_B" in k)  # trained, not the zero init
    contract = json.loads((run.root / "train" / "model" / "workbench_encoder.json").read_text())
    assert contract["format"] == "hf" and contract["pooling"] == "last_token" and contract["add_eos"] is True
    assert contract["steps"] == 24 and contract["query_template"] == "Instruct: {instruction}\nQuery: {text}"
    entry = json.loads((run.root / "manifest.json").read_text())["stages"]["train"]
    assert entry["status"] == "complete" and entry["stats"]["deepspeed"] == "zero3"
    assert result.outputs["train/records.parquet"] == 200
    # a second call with the same config and data is current: nothing retrained
    again = run_train(run, train_config(tiny, deepspeed="zero3", steps=24), None)
    assert again.current


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.05])
def test_zero2_matches_plain_torch_step_for_step(tmp_path, tiny, shared_data, max_grad_norm):
    from workbench.train.stage import run_train

    losses = {}
    for mode in ("none", "zero2"):
        run = accepted_run(tmp_path / mode, shared_data, n=64)
        run_train(run, train_config(tiny, deepspeed=mode, steps=4, lora_dropout=0.0, max_grad_norm=max_grad_norm), None)
        losses[mode] = _losses(run)
    assert losses["none"][0] > 0.1
    plain, zero2 = torch.tensor(losses["none"]), torch.tensor(losses["zero2"])
    # same init, data, schedule and clipping (DeepSpeed would clip at 1.0 unless told train.max_grad_norm):
    # the same steps, to fp32 noise
    assert torch.allclose(plain, zero2, rtol=1e-4, atol=1e-5), losses


def test_gradcache_chunks_give_the_same_step_as_the_whole_batch(tmp_path, tiny, shared_data):
    from workbench.train.stage import run_train

    losses = {}
    for chunk in (0, 4):
        run = accepted_run(tmp_path / f"c{chunk}", shared_data, n=64)
        # dropout off: with dropout the masks depend on how the batch is split, so runs differ by design
        run_train(run, train_config(tiny, deepspeed="zero2", steps=3, chunk_size=chunk, lora_dropout=0.0), None)
        losses[chunk] = _losses(run)
    # chunks accumulated as manual DeepSpeed micro-steps give the whole-batch update
    assert torch.allclose(torch.tensor(losses[0]), torch.tensor(losses[4]), rtol=1e-4, atol=1e-5), losses


def test_saved_adapter_reloads_to_the_same_embeddings(tmp_path, tiny, shared_data):
    from peft import PeftModel
    from transformers import AutoModel

    from workbench.encoder import tokenize
    from workbench.train import data as train_data
    from workbench.train.distributed import setup_distributed
    from workbench.train.export import save_trainable
    from workbench.train.loop import Batch, Loop
    from workbench.train.model import Embedder, load_model
    from workbench.train.zero import build_engine

    tc = train_config(tiny, deepspeed="zero3", steps=3).train
    dist = setup_distributed(True)
    loaded = load_model(tiny, lora_dropout=0.0)
    engine, opt, sched = build_engine(tc, loaded, dist, bf16=False)
    loop = Loop(tc, loaded, dist, engine, opt, sched)
    run = accepted_run(tmp_path / "run", shared_data, n=32)
    records = train_data.build_records(train_data.read_accepted(run), tc).records
    for start in (0, 16):
        rows = records.slice(start, 16)
        loop.step(Batch(rows["query"].to_list(), rows["positive"].to_list(), rows["negative"].to_list(), [True] * 16))
    texts = ["Instruct: Find the sentence\nQuery: Tom is here.", "I love you.", "Wo ist der Bahnhof?"]
    batch = tokenize(loaded.tokenizer, texts, 48, add_eos=True)
    engine.eval()
    with torch.no_grad():
        trained = engine(batch["input_ids"], batch["attention_mask"]).clone()
    folder = save_trainable(loaded, tmp_path / "adapter", is_main=True)
    engine.destroy()
    base = AutoModel.from_pretrained(str(tiny), local_files_only=True)
    reloaded = Embedder(PeftModel.from_pretrained(base, str(folder)), "last_token").eval()
    with torch.no_grad():
        again = reloaded(batch["input_ids"], batch["attention_mask"])
        plain = Embedder(AutoModel.from_pretrained(str(tiny), local_files_only=True), "last_token").eval()(
            batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(trained, again, atol=1e-5)
    assert not torch.allclose(plain, again, atol=1e-3)  # the adapter really changed the model


def test_cli_train_zero3_then_merged_export_loads_with_the_contract(tmp_path, tiny, shared_data):
    from transformers import AutoModel, AutoTokenizer

    from workbench.train.model import Embedder

    run = accepted_run(tmp_path / "run", shared_data, n=48)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "workbench.cli", "train", str(run.root), "--model", str(tiny),
           "--deepspeed", "zero3", "--steps", "6", "--batch-size", "8", "--max-length", "40", "--lr", "1e-3"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained 6 steps on 48 records" in done.stdout
    model_dir = run.root / "train" / "model"
    contract = json.loads((model_dir / "workbench_encoder.json").read_text())
    assert (model_dir / contract["trained_on"]).resolve() == run.root.resolve() and contract["padding_side"] == "left"
    # eval's HF path: AutoModel + tokenizer from the folder, EOS appended as text, last-token pooling
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    tok.padding_side = contract["padding_side"]
    merged = Embedder(AutoModel.from_pretrained(str(model_dir), local_files_only=True), "last_token").eval()
    adapter_contract = json.loads((run.root / "train" / "adapter" / "workbench_encoder.json").read_text())
    assert adapter_contract["format"] == "hf"
    from peft import PeftModel

    base = AutoModel.from_pretrained(str(tiny), local_files_only=True)
    adapted = Embedder(PeftModel.from_pretrained(base, str(run.root / "train" / "adapter")), "last_token").eval()
    texts = [t + tok.eos_token for t in ["Tom is here.", "Where is the station?"]]
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(merged(**batch), adapted(**batch), atol=1e-5)
    # errors are one line, exit 2: a bad DeepSpeed config and a config that cannot fit
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 3}, "scheduler": {"type": "WarmupLR"}}))
    done = subprocess.run(cmd[:-8] + ["--deepspeed-config", str(bad)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "bad.json" in done.stderr and "scheduler" in done.stderr
    assert "Traceback" not in done.stderr
    est = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "train", str(tmp_path / "est"), "--model", str(tiny), "--deepspeed", "zero3",
         "--estimate", "--batch-size", "4096", "--max-length", "512", "--gpu-memory-gib", "0.05"],
        capture_output=True, text=True, env=env, timeout=120)
    assert est.returncode == 2 and "cannot fit" in est.stderr, est.stderr
    assert "per-GPU memory estimate" in est.stdout


def test_ranks_agree_on_hard_negatives_under_gloo(tiny):
    """Rank 0 has hard negatives, rank 1 has none: both must take the same branch (an all-reduce),
    or their all-gathers mismatch and the step hangs. Two CPU processes under gloo."""
    import multiprocessing
    import time

    from workbench.processes import free_port

    from train_support import hard_negative_step_worker

    queries = ["Instruct: Find it\nQuery: Tom is here.", "Instruct: Find it\nQuery: I love you.",
               "Instruct: Find it\nQuery: Where is the station?", "Instruct: Find it\nQuery: It is late."]
    positives = ["Tom is here.", "I love you.", "Where is the station?", "It is late."]
    negatives = ["Tom was there.", "I hate rain.", "", ""]
    mask = [True, True, False, False]
    port = free_port()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    procs = [context.Process(target=hard_negative_step_worker,
                             args=(rank, 2, port, str(tiny), queries, positives, negatives, mask, results))
             for rank in range(2)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + 240  # loading two tiny models takes ~30 s; a hang waits forever
    for proc in procs:
        proc.join(timeout=max(1.0, deadline - time.monotonic()))
    hung = [proc for proc in procs if proc.is_alive()]
    for proc in hung:
        proc.kill()
    assert not hung, "a rank hung: the ranks disagreed on the hard-negative branch"
    assert [proc.exitcode for proc in procs] == [0, 0]
    losses = dict(results.get(timeout=5) for _ in range(2))
    # the two ranks' losses average to the one-process loss over the whole batch (same init, same data)
    single = context.Queue()
    hard_negative_step_worker(0, 1, 0, str(tiny), queries, positives, negatives, mask, single)
    _, whole = single.get(timeout=5)
    assert abs((losses[0] + losses[1]) / 2 - whole) < 1e-4, (losses, whole)
