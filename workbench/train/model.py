"""The embedder being trained: an HF backbone (+ LoRA), pooling, L2 normalisation.

Model inspection, tokenising (EOS after truncation) and pooling come from :mod:`workbench.encoder`,
the contract eval reads too.

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

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from workbench.encoder import ModelInfo, Pooling, check_eos, inspect_model, pool
from workbench.errors import WorkbenchError, first_line

log = logging.getLogger(__name__)


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
    max_length: int = 512,
) -> LoadedModel:
    """Load backbone + tokenizer from a local folder, wrap in LoRA, set pooling and padding."""
    from transformers import AutoModel, AutoTokenizer

    info = inspect_model(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(info.hf_path), local_files_only=True)
        backbone = AutoModel.from_pretrained(str(info.hf_path), dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        first = first_line(err, 200)
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
    if add_eos:
        check_eos(tokenizer, max_length, where=str(info.hf_path))
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
