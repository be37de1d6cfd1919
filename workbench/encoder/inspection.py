"""Model inspection: what a model folder is (where its HF weights are, whether it is a decoder).

Owns the one "is it a decoder?" rule (:func:`is_decoder_config`) and :func:`read_json`, the reading
of a model folder's JSON files with one clear error when one is broken.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

DECODER_TYPES = {"mistral", "llama", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox", "smollm3"}


@dataclass(frozen=True)
class ModelInfo:
    """What a model folder holds: where the HF weights are and which recipe defaults apply."""

    path: Path  # the folder given
    hf_path: Path  # the folder with config.json (a sentence-transformers folder's Transformer module)
    is_decoder: bool
    is_sentence_transformers: bool
    model_type: str
    name_or_path: str = ""


def read_json(file: Path) -> Any:
    """A model folder's JSON file; one line naming the file when it is not valid JSON."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise WorkbenchError(f"not valid JSON ({err.msg}, line {err.lineno})", where=str(file)) from None


def is_decoder_config(config: dict[str, Any]) -> bool:
    """The one "is it a decoder?" rule: ``is_decoder``, a ``*ForCausalLM`` architecture or a known decoder type."""
    archs = config.get("architectures") or []
    return (
        bool(config.get("is_decoder"))
        or any(str(a).endswith("ForCausalLM") for a in archs)
        or config.get("model_type") in DECODER_TYPES
    )


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
        for module in read_json(folder / "modules.json"):
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
    config = read_json(config_file)
    return ModelInfo(folder, hf_path, is_decoder_config(config), is_st, str(config.get("model_type", "")),
                     str(config.get("_name_or_path", "")))
