"""The encoder contract shared by train and eval: what a model folder is, how texts are formatted,
tokenised and pooled. Train writes it, eval reads it; neither has its own copy. One module per concern:

* :mod:`~workbench.encoder.spec` — :class:`EncoderSpec`, the saved-model contract
  (``workbench_encoder.json``); :func:`load_spec` reads a folder, :func:`write_spec` writes it.
* :mod:`~workbench.encoder.inspection` — :func:`inspect_model`: where the HF weights are and
  whether the model is a decoder.
* :mod:`~workbench.encoder.templates` — :data:`QUERY_TEMPLATE` and :func:`render`
  (``Instruct: {instruction}\\nQuery: {text}``).
* :mod:`~workbench.encoder.instructions` — the instruction policy for mteb tasks and its table,
  ``instructions.toml`` (:func:`task_instruction`, :func:`instructs_every_text`).
* :mod:`~workbench.encoder.tokens` — :func:`tokenize` (truncation first, then EOS) and :func:`check_eos`.
* :mod:`~workbench.encoder.pooling` — :func:`pool`: last token (from the attention mask, left or
  right padding), mean and cls.
* :mod:`~workbench.encoder.minilm` — :func:`minilm_path`, the embedded MiniLM demo model.

Eval and train import from here (``from workbench.encoder import load_spec``); the encoder imports
nothing from either.
"""

from workbench.encoder.inspection import DECODER_TYPES, ModelInfo, inspect_model, is_decoder_config
from workbench.encoder.instructions import (
    INSTRUCTIONS_FILE,
    RETRIEVAL_TYPES,
    instructs_every_text,
    task_instruction,
    task_instructions,
)
from workbench.encoder.minilm import minilm_path
from workbench.encoder.pooling import POOLINGS, Pooling, last_token_pool, mean_pool, pool
from workbench.encoder.spec import (
    CONTRACT_FILE,
    PRESETS,
    ST_CONFIG_FILE,
    EncoderSpec,
    load_spec,
    preset_for,
    write_spec,
)
from workbench.encoder.templates import QUERY_TEMPLATE, render, with_instruction
from workbench.encoder.tokens import check_eos, tokenize

__all__ = [
    "CONTRACT_FILE",
    "DECODER_TYPES",
    "INSTRUCTIONS_FILE",
    "POOLINGS",
    "PRESETS",
    "QUERY_TEMPLATE",
    "RETRIEVAL_TYPES",
    "ST_CONFIG_FILE",
    "EncoderSpec",
    "ModelInfo",
    "Pooling",
    "check_eos",
    "inspect_model",
    "instructs_every_text",
    "is_decoder_config",
    "last_token_pool",
    "load_spec",
    "mean_pool",
    "minilm_path",
    "pool",
    "preset_for",
    "render",
    "task_instruction",
    "task_instructions",
    "tokenize",
    "with_instruction",
    "write_spec",
]
