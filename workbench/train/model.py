"""The embedder being trained: an HF backbone (+ LoRA), pooling, L2 normalisation.

* Decoders (Mistral by default; any ``AutoModel`` whose config is a ``*ForCausalLM`` /
  ``is_decoder``): EOS appended to every text, last non-pad token pooling located through the
  attention mask (left or right padding), as E5-mistral does.
* Encoders (BERT-style, e.g. the MiniLM demo embedder, also when given as a sentence-transformers
  folder): mean pooling over the attention mask, no EOS.

LoRA (peft): r=16, alpha=32, dropout=0.1 on all linear projections (``target_modules="all-linear"``).
Gradient checkpointing is the non-reentrant kind. Embeddings leave in fp32, L2-normalised, so the
loss is computed in fp32 whatever the backbone dtype.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)

Pooling = Literal["last_token", "mean", "cls"]
CONTRACT_FILE = "workbench_encoder.json"


@dataclass(frozen=True)
class ModelInfo:
    """What a model folder holds: where the HF weights are and which recipe defaults apply."""

    path: Path  # the folder given
    hf_path: Path  # the folder with config.json (a sentence-transformers folder's Transformer module)
    is_decoder: bool
    is_sentence_transformers: bool
    model_type: str


def inspect_model(path: str | Path) -> ModelInfo:
    """Find the HF config in ``path``; one clear error when the folder is not a model."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise WorkbenchError(
            "model folder not found",
            where=str(folder),
            fix="give --model a local folder with config.json (no hub downloads here)",
        )
    hf_path = folder
    is_st = (folder / "modules.json").is_file()
    if is_st and not (folder / "config.json").is_file():
        try:
            modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise WorkbenchError(f"modules.json is not valid JSON ({err.msg})", where=str(folder)) from None
        for module in modules:
            if module.get("type", "").endswith("Transformer"):
                hf_path = folder / module.get("path", "")
                break
    config_file = hf_path / "config.json"
    if not config_file.is_file():
        raise WorkbenchError(
            "not a model folder (no config.json)",
            where=str(folder),
            fix="give --model an HF or sentence-transformers model folder",
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise WorkbenchError(f"config.json is not valid JSON ({err.msg})", where=str(config_file)) from None
    archs = config.get("architectures") or []
    is_decoder = bool(config.get("is_decoder")) or any(a.endswith("ForCausalLM") for a in archs) or config.get(
        "model_type"
    ) in {"mistral", "llama", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox", "smollm3"}
    return ModelInfo(folder, hf_path, is_decoder, is_st, str(config.get("model_type", "")))


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of the last non-pad token of each row, for left or right padding.

    Left padding puts every row's last token at position -1; right padding puts it at
    ``mask.sum() - 1``. Positions are found from the mask, so mixed or unusual masks also work.
    """
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    if mode == "last_token":
        return last_token_pool(hidden, mask)
    if mode == "mean":
        return mean_pool(hidden, mask)
    if mode == "cls":
        return hidden[:, 0]
    raise WorkbenchError(f"unknown pooling {mode!r}", where="train.pooling", fix="use last_token, mean or cls")


class Embedder(nn.Module):
    """Backbone + pooling + normalisation. ``forward(input_ids, attention_mask) -> (B, d) fp32``."""

    def __init__(self, backbone: nn.Module, pooling: Pooling):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = pool(hidden, attention_mask, self.pooling).float()
        return nn.functional.normalize(pooled, dim=-1)


@dataclass
class LoadedModel:
    embedder: Embedder
    tokenizer: object
    info: ModelInfo
    pooling: Pooling
    add_eos: bool
    padding_side: Literal["left", "right"]


def load_model(
    path: str | Path,
    *,
    pooling: str = "auto",
    lora: bool = True,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.1,
    gradient_checkpointing: bool = True,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load backbone + tokenizer from a local folder, wrap in LoRA, set pooling and padding."""
    from transformers import AutoModel, AutoTokenizer

    info = inspect_model(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(info.hf_path), local_files_only=True)
        backbone = AutoModel.from_pretrained(str(info.hf_path), dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise WorkbenchError(
            f"cannot load the model ({type(err).__name__}: {first})",
            where=str(info.hf_path),
            fix="check that the folder holds complete weights and tokenizer files",
        ) from None
    chosen: Pooling = ("last_token" if info.is_decoder else "mean") if pooling == "auto" else pooling  # type: ignore[assignment]
    padding_side: Literal["left", "right"] = "left" if info.is_decoder else "right"
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    add_eos = info.is_decoder and tokenizer.eos_token_id is not None
    if gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        backbone.config.use_cache = False
    if lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules="all-linear",
            bias="none",
        )
        backbone = get_peft_model(backbone, config)
    return LoadedModel(Embedder(backbone, chosen), tokenizer, info, chosen, add_eos, padding_side)


def tokenize(tokenizer, texts: list[str], max_length: int, add_eos: bool) -> dict[str, torch.Tensor]:
    """Tokenise with truncation; with ``add_eos`` the EOS id ends every row (after truncation)."""
    if not add_eos:
        return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
    encoded = tokenizer(texts, padding=False, truncation=True, max_length=max_length - 1)
    ids = [row + [tokenizer.eos_token_id] for row in encoded["input_ids"]]
    return dict(tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt"))


def trainable_state(embedder: Embedder) -> dict[str, torch.Tensor]:
    """Names and tensors of the trainable parameters (the LoRA weights, or all for full tuning)."""
    return {name: p for name, p in embedder.backbone.named_parameters() if p.requires_grad}
