"""Tokenising: truncation first, then EOS appended (so a long text keeps its EOS), and the check of it.

This is what E5-mistral's own code does (``max_length - 1`` then ``+ [eos_token_id]``); train and
eval both call :func:`tokenize`, and :func:`check_eos` proves it on a long text when a model is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.encoder.templates import with_instruction
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    import torch


def tokenize(tokenizer, texts: list[str], max_length: int, add_eos: bool) -> dict[str, torch.Tensor]:
    """Tokenise with truncation; with ``add_eos`` the EOS id ends every row, appended after truncation."""
    if not add_eos:
        return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
    encoded = tokenizer(texts, padding=False, truncation=True, max_length=max_length - 1)
    ids = [row + [tokenizer.eos_token_id] for row in encoded["input_ids"]]
    return dict(tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt"))


def check_eos(tokenizer, max_length: int, where: str) -> None:
    """Prove on a query longer than ``max_length`` that the tokenised row ends with EOS (else one clear error)."""
    long_text = with_instruction("Given a question, retrieve passages that answer it",
                                 " ".join(["lorem ipsum dolor sit amet"] * max(max_length, 8)))  # a long query
    batch = tokenize(tokenizer, [long_text, "short"], max_length, add_eos=True)
    for row, mask in zip(batch["input_ids"], batch["attention_mask"]):
        real = row[mask.bool()]
        if len(real) > max_length or int(real[-1]) != tokenizer.eos_token_id:
            raise WorkbenchError(
                f"a long text does not end with EOS after tokenising (last id {int(real[-1])}, "
                f"EOS {tokenizer.eos_token_id}, {len(real)} tokens for max_length {max_length})",
                where=where,
                fix="check the tokenizer's eos_token",
            )
