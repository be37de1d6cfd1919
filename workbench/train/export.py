"""Saving and exporting the trained embedder: the adapter (real tensors under ZeRO-3) and the merged model.

The export carries ``workbench_encoder.json`` (:mod:`workbench.encoder`), the contract eval reads.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from workbench.config import TrainSection
from workbench.encoder import QUERY_TEMPLATE, EncoderSpec, task_instructions, with_instruction, write_spec
from workbench.run import atomic_write_bytes
from workbench.train.card import base_model_id


def gathered_trainable_state(embedder) -> dict[str, Any]:
    """Full tensors of every trainable parameter, consolidated from ZeRO-3 partitions if needed.

    PEFT's ``save_pretrained`` under ZeRO-3 sees the empty local partitions; here the parameters
    are gathered first (``deepspeed.zero.GatheredParameters``; a no-op for unpartitioned ones) and
    cloned to CPU, keyed by their names in the PEFT model.
    """
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
    prompts = {f"{task}-query": with_instruction(instruction, "")
               for task, instruction in task_instructions().items()}
    prompts["query"] = with_instruction("Given a query, retrieve relevant documents that answer the query", "")
    return prompts


def encoder_spec(tc: TrainSection, loaded) -> EncoderSpec:
    """The saved-model contract of this run's export: how eval must load and run it."""
    return EncoderSpec(
        path="",
        format="hf" if loaded.info.is_decoder else "sentence-transformers",
        pooling=loaded.pooling,
        normalize=True,
        max_length=tc.max_length,
        query_template=QUERY_TEMPLATE,
        document_template=None,
        add_eos=loaded.add_eos,
        padding_side=loaded.padding_side,
        base_model=base_model_id(loaded.info)[0],  # for readers: a Hub id or name, not a local path
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
