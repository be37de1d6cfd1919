"""DeepSpeed for the train stage: the ZeRO config, the memory estimate and fit check, the engine.

``deepspeed_config`` reads ``workbench/train/configs/zero{2,3}.json`` (or ``train.deepspeed_config``)
and fills in the batch, precision and offload; ``estimate_memory`` / ``check_fits`` answer
``workbench train --estimate`` from DeepSpeed's own model-state estimators; ``build_engine`` gives
the DeepSpeed engine with the recipe's AdamW + warmup/linear decay, or its plain-torch twin.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from workbench.config import TrainSection
from workbench.encoder import ModelInfo
from workbench.errors import ConfigError, WorkbenchError, first_line
from workbench.resources import package_path
from workbench.train.distributed import DistState

CONFIG_DIR = package_path("train", "configs")
GIB = 1024**3


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
    if "gradient_clipping" in cfg and tc.deepspeed_config is not None and cfg["gradient_clipping"] != tc.max_grad_norm:
        raise ConfigError(
            f"field 'gradient_clipping' is {cfg['gradient_clipping']!r} here but train.max_grad_norm is {tc.max_grad_norm:g}",
            where=where, fix="remove it and set train.max_grad_norm (plain torch and DeepSpeed clip alike)")
    # DeepSpeed clips at 1.0 unless told otherwise; the plain-torch loop clips at train.max_grad_norm
    cfg["gradient_clipping"] = tc.max_grad_norm
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


def validate_deepspeed_config(cfg: dict, where: str) -> None:
    """Let DeepSpeed's own config parser judge the file (after distributed init)."""
    from deepspeed.runtime.config import DeepSpeedConfig

    try:
        DeepSpeedConfig(json.loads(json.dumps(cfg)))
    except (ValueError, AssertionError, KeyError, TypeError) as err:
        first = first_line(err, 240)
        raise ConfigError(f"DeepSpeed rejects this config ({type(err).__name__}: {first})", where=where) from None


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


def build_engine(tc: TrainSection, loaded, dist: DistState, bf16: bool):
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
    validate_deepspeed_config(ds_cfg, where)
    try:
        engine, ds_optimizer, _, ds_scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_cfg
        )
    except (ValueError, AssertionError, KeyError, TypeError) as err:
        first = first_line(err, 240)
        raise ConfigError(f"DeepSpeed cannot start with this config ({type(err).__name__}: {first})", where=where) from None
    return engine, None, None
