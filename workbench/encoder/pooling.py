"""Pooling: one token-vector per text from the hidden states (last token, mean, cls); owns the pooling names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    import torch

Pooling = Literal["mean", "last_token", "cls"]
POOLINGS: tuple[str, ...] = ("mean", "last_token", "cls")


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of the last non-pad token of each row, for left or right padding.

    Left padding puts every row's last token at position -1; right padding puts it at
    ``mask.sum() - 1``. Positions are found from the mask, so mixed or unusual masks also work.
    """
    import torch

    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str | None) -> torch.Tensor:
    if mode == "last_token":
        return last_token_pool(hidden, mask)
    if mode == "mean":
        return mean_pool(hidden, mask)
    if mode == "cls":
        return hidden[:, 0]
    raise WorkbenchError(f"unknown pooling {mode!r}", where="pooling", fix="use last_token, mean or cls")
