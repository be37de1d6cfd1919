"""InfoNCE over in-batch negatives plus one hard negative (E5-mistral, temperature 0.02).

Pure function over embeddings; no model, no data. With several processes the candidates
(positives and hard negatives) of every rank are all-gathered, with gradient flowing back to the
local shard (``torch.distributed.nn.functional.all_gather``), so every query is scored against
the whole global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn import functional as F


def _gather(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' ``tensor`` concatenated on dim 0 (gradient to the local part) and this rank's offset."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(tensor.contiguous())
    rank = dist.get_rank()
    return torch.cat(parts, dim=0), rank * tensor.shape[0]


def _gather_plain(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' ``tensor`` concatenated on dim 0, without gradient (for masks)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """``flag`` OR-ed over all ranks (an all-reduce MAX), so every rank takes the same branch.

    Whether a batch has hard negatives decides which collectives the loss issues; ranks that
    decided alone could disagree and then wait on each other's all-gathers forever.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bool(flag)
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    negative_mask: torch.Tensor | None = None,
    temperature: float = 0.02,
    gather: bool = True,
) -> torch.Tensor:
    """Mean cross-entropy of each query against all positives and hard negatives in the batch.

    ``queries``, ``positives``, ``negatives``: (B, d), L2-normalised; query i's positive is row i.
    ``negative_mask`` (B,) marks rows that really have a hard negative (False rows are ignored as
    candidates). Computed in fp32.
    """
    q = queries.float()
    p = positives.float()
    if gather:
        p, offset = _gather(p)
    else:
        offset = 0
    candidates = [p]
    masks = [torch.ones(p.shape[0], dtype=torch.bool, device=p.device)]
    if negatives is not None:
        n = negatives.float()
        m = (
            negative_mask.to(device=n.device, dtype=torch.bool)
            if negative_mask is not None
            else torch.ones(n.shape[0], dtype=torch.bool, device=n.device)
        )
        if gather:
            n, _ = _gather(n)
            m = _gather_plain(m.to(torch.uint8)).bool()
        candidates.append(n)
        masks.append(m)
    keys = torch.cat(candidates, dim=0)
    valid = torch.cat(masks, dim=0)
    logits = (q @ keys.T) / temperature
    logits = logits.masked_fill(~valid.unsqueeze(0), float("-inf"))
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels)
