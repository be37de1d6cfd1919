"""The training loop: one optimizer step over a global batch (plain or GradCache-chunked), and the loop.

Public step API (tests and benchmarks use it): :class:`Batch` is the local slice of a global
batch, :class:`Loop` wraps an engine from :func:`workbench.train.zero.build_engine` and
``Loop.step(batch)`` runs one optimizer step and returns (loss, tokens); :func:`train_loop` draws
batches from the weighted sampler for ``train.steps`` steps and logs them.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from workbench.config import TrainSection
from workbench.progress import TrainProgress
from workbench.run import Run
from workbench.train import data as train_data
from workbench.train.distributed import DistState

log = logging.getLogger(__name__)


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
class Batch:
    queries: list[str]
    positives: list[str]
    negatives: list[str]
    negative_mask: list[bool]


class Loop:
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
        from workbench.encoder import tokenize

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
                if self.tc.max_grad_norm > 0:  # as DeepSpeed's gradient_clipping does on the other path
                    import torch

                    params = [p for group in self.optimizer.param_groups for p in group["params"]]
                    torch.nn.utils.clip_grad_norm_(params, self.tc.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)

    def step(self, batch: Batch) -> tuple[float, int]:
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


def train_loop(run: Run, tc: TrainSection, records: pl.DataFrame, loop: Loop, dist: DistState, seed: int,
               progress: Callable[[TrainProgress], None] | None = None) -> dict[str, Any]:
    """``tc.steps`` optimizer steps; ``progress`` (the CLI's view, rank 0 only) gets the state after each."""
    sampler = train_data.BatchSampler(records, tc.batch_size, random.Random(seed), tc.one_task_per_batch,
                                      multiple_of=dist.world_size)
    queries = records["query"].to_list()
    positives = records["positive"].to_list()
    negatives = records["negative"].to_list()
    losses: list[float] = []
    log_rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    total_tokens = 0
    state = TrainProgress(steps=tc.steps)
    view = progress if dist.rank == 0 else None
    if view is not None:
        view(state)
    for step in range(tc.steps):
        drawn = next(sampler)
        local = len(drawn) // dist.world_size
        indices = drawn[dist.rank * local : (dist.rank + 1) * local]
        batch = Batch(
            [queries[i] for i in indices],
            [positives[i] for i in indices],
            [negatives[i] or "" for i in indices],
            [negatives[i] is not None for i in indices],
        )
        loss, tokens = loop.step(batch)
        losses.append(loss)
        total_tokens += tokens
        if (step + 1) % tc.log_every == 0 or step == 0 or step + 1 == tc.steps:
            lr = current_lr(loop)
            log_rows.append({"step": step + 1, "loss": loss, "learning_rate": lr,
                             "seconds": time.perf_counter() - started, "tokens": tokens * dist.world_size})
            log.info("step %d loss %.4f lr %.2e", step + 1, loss, lr)
        if view is not None:
            state.step, state.loss = step + 1, loss
            view(state)
    seconds = time.perf_counter() - started
    window = max(1, min(10, len(losses) // 4))
    if sampler.repeated_text_batches:
        log.warning("%d of %d batches hold one text twice (the records next in line share texts, e.g. class "
                    "labels): there a text is one query's positive and another's in-batch negative",
                    sampler.repeated_text_batches, tc.steps)
    return {
        "repeated_text_batches": sampler.repeated_text_batches,
        "steps": tc.steps,
        "losses": losses,
        "log": log_rows,
        "first_loss": sum(losses[:window]) / window,
        "last_loss": sum(losses[-window:]) / window,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(total_tokens * dist.world_size / max(seconds, 1e-9), 1),
    }


def current_lr(loop: Loop) -> float:
    if loop.use_ds:
        return float(loop.engine.get_lr()[0])
    return float(loop.scheduler.get_last_lr()[0])
