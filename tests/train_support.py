"""Shared helpers for the train tests: a tiny random Mistral on disk and accepted tables from Tatoeba."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from workbench.config import RunConfig
from workbench.run import Run
from workbench.tables import ACCEPTED
from workbench.testing.tiny import build_tiny_mistral


def tatoeba(shared_data: Path, pair: str = "deu", n: int = 300) -> tuple[list[str], list[str]]:
    folder = shared_data / "tatoeba"
    eng = (folder / f"tatoeba.{pair}-eng.eng").read_text(encoding="utf-8").splitlines()[:n]
    other = (folder / f"tatoeba.{pair}-eng.{pair}").read_text(encoding="utf-8").splitlines()[:n]
    return eng, other


def tiny_model(folder: Path, shared_data: Path) -> Path:
    eng, deu = tatoeba(shared_data)
    return build_tiny_mistral(folder, eng + deu)


def accepted_run(root: Path, shared_data: Path, n: int = 200) -> Run:
    """A run whose accepted/en.parquet is a learnable retrieval task built from real sentences:
    the query is a sentence (with instruction), the positive the same sentence, the hard
    negative the next sentence."""
    eng, _ = tatoeba(shared_data, n=n)
    run = Run.create(root)
    run.config_path.write_text(RunConfig().to_toml())  # as the CLI would: it reads a run's settings from there
    rows = [
        {
            **dict.fromkeys(ACCEPTED),
            "slot_id": f"en-{i:05d}",
            "language": "en",
            "family": "short_long",
            "task": "Find the sentence that was typed",
            "user_query": text,
            "positive_document": text,
            "hard_negative_document": eng[(i + 1) % len(eng)],
            "status": "ok",
            "reasons": [],
            "lid_votes": [],
        }
        for i, text in enumerate(eng)
    ]
    run.write_table("accepted", "en", pl.DataFrame(rows, schema=ACCEPTED), ACCEPTED)  # schema-checked, as the filter writes it
    return run


def train_config(model: Path, **train) -> RunConfig:
    defaults = {
        "model": str(model),
        "batch_size": 16,
        "steps": 20,
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "max_length": 48,
        "log_every": 1,
    }
    return RunConfig.model_validate({"run": {"seed": 7}, "train": {**defaults, **train}})


def hard_negative_step_worker(rank: int, world: int, port: int, model: str, queries: list[str], positives: list[str],
                              negatives: list[str], mask: list[bool], results) -> None:
    """One training step of rank ``rank`` under gloo (for the cross-rank hard-negative test).

    Every rank gets the same slice sizes; ``mask`` marks which rows have a hard negative, so the
    test can give one rank negatives and the other none. Puts (rank, loss) on ``results``.
    """
    import os

    import torch

    from workbench.config import TrainSection
    from workbench.train.distributed import DistState
    from workbench.train.loop import Batch, Loop
    from workbench.train.model import load_model
    from workbench.train.zero import build_engine

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    tc = TrainSection(model=model, deepspeed="none", batch_size=len(queries), steps=2, max_length=32, lora_dropout=0.0,
                      gradient_checkpointing=False)
    torch.manual_seed(0)
    loaded = load_model(model, lora_dropout=0.0, gradient_checkpointing=False)
    state = DistState(rank, world, rank, torch.device("cpu"))
    engine, optimizer, scheduler = build_engine(tc, loaded, state, bf16=False)
    loop = Loop(tc, loaded, state, engine, optimizer, scheduler)
    local = len(queries) // world
    part = slice(rank * local, (rank + 1) * local)
    loss, _ = loop.step(Batch(queries[part], positives[part], negatives[part], mask[part]))
    results.put((rank, loss))
    if world > 1:
        torch.distributed.destroy_process_group()
