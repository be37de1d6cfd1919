"""``workbench`` commands for the model stages: train, eval.

Registered on the app in :mod:`workbench.cli`; each parses options and calls one stage function.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from workbench.cli_data import split_values
from workbench.cli_render import (
    StageProgress,
    err_console,
    print_eval_estimate,
    print_eval_results,
    print_train_estimate,
    print_train_summary,
)
from workbench.errors import WorkbenchError


# --- train -----------------------------------------------------------------------------------
def train(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory with accepted/ tables")],
    model: Annotated[Optional[str], typer.Option("--model", help="local model folder (HF or sentence-transformers)")] = None,
    deepspeed: Annotated[Optional[str], typer.Option("--deepspeed", help="zero2, zero3 or none")] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="run config TOML")] = None,
    deepspeed_config: Annotated[Optional[Path], typer.Option("--deepspeed-config", help="DeepSpeed JSON replacing the repo's")] = None,
    steps: Annotated[Optional[int], typer.Option(help="optimizer steps (overrides --epochs)")] = None,
    epochs: Annotated[Optional[float], typer.Option("--epochs", help="passes over the accepted records (default 1)")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="global batch (queries)")] = None,
    chunk_size: Annotated[Optional[int], typer.Option("--chunk-size", help="GradCache chunk per device (0 = off)")] = None,
    learning_rate: Annotated[Optional[float], typer.Option("--lr", help="peak learning rate")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option("--warmup-steps")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="tokens per text")] = None,
    lora: Annotated[Optional[bool], typer.Option("--lora/--full", help="LoRA adapters or full fine-tuning")] = None,
    gpu_memory_gib: Annotated[Optional[float], typer.Option("--gpu-memory-gib", help="per-GPU memory for the fit check")] = None,
    estimate: Annotated[bool, typer.Option("--estimate", help="print per-GPU memory and exit")] = False,
) -> None:
    """Fine-tune an embedder on accepted/ (E5 recipe); writes train/ and an exported model eval loads."""
    from workbench.runconfig import resolve_run_config
    from workbench.train.stage import estimate_run, run_train

    options = {
        "model": model,
        "deepspeed": deepspeed,
        "deepspeed_config": str(deepspeed_config) if deepspeed_config else None,
        "steps": steps,
        "epochs": epochs,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "learning_rate": learning_rate,
        "warmup_steps": warmup_steps,
        "max_length": max_length,
        "lora": lora,
        "gpu_memory_gib": gpu_memory_gib,
    }
    updates = {key: value for key, value in options.items() if value is not None}
    # --estimate is about the model, not the run: it needs no run directory and writes nothing
    run, config = resolve_run_config(run_dir, config_file, {"train": updates}, create=estimate, write=not estimate,
                                     stages=("train",), options={"train.deepspeed": "--deepspeed"})
    if estimate:
        needed = estimate_run(run, config)
        print_train_estimate(needed)
        needed.check_fits()  # after the tables: the error line says what to change in them
        return
    with StageProgress() as view:
        result = run_train(run, config, None, progress=view.update)
    print_train_summary(run, result)


# --- eval ------------------------------------------------------------------------------------
EVAL_OPTIONS = {"eval.task": "--task"}  # a bad value of these is named by its option (workbench.runconfig)


def eval_command(
    run_arg: Annotated[Optional[Path], typer.Argument(metavar="RUN", help="run directory (results go to RUN/eval/)")] = None,
    run_option: Annotated[Optional[Path], typer.Option("--run", hidden=True, help="deprecated: give RUN as the first argument")] = None,
    create: Annotated[bool, typer.Option("--create", help="create RUN if missing (an evaluation with no other stage)")] = False,
    model: Annotated[
        Optional[str], typer.Option("--model", help="model folder, 'minilm' (the demo wheel) or 'bm25'")
    ] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="miracl | xquad | beir | tatoeba | passkey")] = None,
    languages: Annotated[Optional[list[str]], typer.Option("--languages", "-l", help="codes, e.g. 'yo' or 'en,de'")] = None,
    hard_negatives: Annotated[
        Optional[bool],
        typer.Option("--hard-negatives/--full", help="MIRACL corpus: the hard-negatives subset (default) or the full corpus"),
    ] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="offline: local MIRACL- or BEIR-format folder")] = None,
    bm25: Annotated[bool, typer.Option("--bm25", help="also run the BM25 baseline")] = False,
    system: Annotated[Optional[str], typer.Option("--system", help="name in the results table")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="default: dev (MIRACL), test (BEIR)")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size")] = None,
    pooling: Annotated[Optional[str], typer.Option("--pooling", help="HF folders: mean | last_token | cls")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1 (default: cuda if present)")] = None,
    contract_from: Annotated[
        Optional[Path], typer.Option("--contract-from", help="run --model under this exported model's contract (template, max_length, pooling)")
    ] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="run config TOML")] = None,
    launcher: Annotated[Optional[str], typer.Option("--launcher", help="torchrun: shard the embedding model's work over --gpus processes (docs/eval.md)")] = None,
    gpus: Annotated[int, typer.Option("--gpus", help="ranks for --launcher torchrun (one per GPU; CPU processes without GPUs); --estimate: GPUs to plan for")] = 1,
    shard_rows: Annotated[Optional[int], typer.Option("--shard-rows", help="sharded runs: rows per shard (default: about 64 shards, 256 to 100,000 rows)")] = None,
    estimate: Annotated[bool, typer.Option("--estimate", help="print passages, tokens, embedding disk and GPU-hours per language; evaluate nothing")] = False,
    throughput: Annotated[Optional[float], typer.Option("--throughput", help="--estimate: measured passages/s per GPU (default: assumed from the model size)")] = None,
    throughput_tokens: Annotated[Optional[float], typer.Option("--throughput-tokens", help="--estimate: mean tokens per passage --throughput was measured at (default 256)")] = None,
    model_params: Annotated[Optional[float], typer.Option("--model-params", help="--estimate: model parameters, e.g. 7.1e9 (default: counted from --model, else 7.1e9)")] = None,
) -> None:
    """Evaluate a model (and/or BM25) with mteb on MIRACL, XQuAD or any BEIR folder; writes RUN/eval/results.parquet."""
    from workbench.eval.estimate import estimate_run
    from workbench.eval.stage import eval_overrides, run_eval
    from workbench.languages import load_registry
    from workbench.run import MANIFEST
    from workbench.runconfig import resolve_run_config

    if run_arg is not None and run_option is not None:
        raise WorkbenchError("RUN given twice", where="--run", fix="drop --run; give RUN as the first argument")
    if run_arg is None and run_option is None:
        raise WorkbenchError("missing argument RUN", where="workbench eval",
                             fix="give a run directory, e.g. 'workbench eval runs/eval --create --model bm25 ...'")
    if run_option is not None:  # the old spelling keeps its old meaning: the folder is created when missing
        create = True
    run_dir = run_arg if run_arg is not None else run_option
    if launcher is not None:  # this process only starts torchrun; rank 0 below takes the run's lock
        from workbench.eval.sharded import launch_torchrun

        if launcher != "torchrun":
            raise WorkbenchError(f"unknown launcher '{launcher}'", where="--launcher", fix="use torchrun")
        raise typer.Exit(launch_torchrun(gpus))
    from workbench.eval import sharded
    from workbench.locks import enter_for_command

    dist = enter_for_command(sharded.session(shard_rows))  # under torchrun: this rank (None otherwise)
    if dist is not None and not dist.leader:  # ranks > 0 do the shards rank 0 announces, nothing else
        logging.getLogger().setLevel(logging.ERROR)  # rank 0 says what every rank would say ...
        logging.getLogger("workbench.eval.sharded").setLevel(logging.WARNING)  # ... but not which shards this one redoes
        from workbench.stagelog import stage_log

        with stage_log(run_dir, "eval"):  # this rank's own log: logs/eval.rank<N>.log (which shards it redid, why)
            sharded.follow(dist, run_dir)
        return
    if not create and not estimate and not (run_dir / MANIFEST).is_file():
        raise WorkbenchError("not a run directory (no manifest.json)", where=str(run_dir),
                             fix="check the path, or add --create to start a run for this evaluation")
    given: dict[str, object] = {}
    for key, value in (("model", model), ("task", task), ("system", system), ("split", split),
                       ("batch_size", batch_size), ("pooling", pooling), ("device", device)):
        if value is not None:
            given[key] = value
    if languages:
        given["languages"] = split_values(languages)
    if hard_negatives is not None:
        given["corpus"] = "hard-negatives" if hard_negatives else "full"
    if data_dir is not None:
        given["data_dir"] = str(data_dir)
    if bm25:
        given["bm25"] = True
    if contract_from is not None:
        given["contract_from"] = str(contract_from)
    overrides = {"eval": eval_overrides(given, config_file=config_file)}
    if estimate:  # a plan, not an evaluation: needs no run directory and writes nothing
        _, config = resolve_run_config(run_dir, config_file, overrides, create=True, write=False, options=EVAL_OPTIONS)
        plan, room = estimate_run(run_dir, config.eval, load_registry(), model=model, gpus=max(1, gpus),
                                  throughput=throughput, throughput_tokens=throughput_tokens,
                                  model_params=model_params, shard_rows_override=shard_rows)
        print_eval_estimate(plan, room, run_dir)
        room.check()  # after the table: the error line says what to change in it
        return
    run, config = resolve_run_config(run_dir, config_file, overrides, create=create, stages=("eval",),
                                     options=EVAL_OPTIONS)
    with StageProgress() as view:
        result = run_eval(run, config, load_registry(), progress=view.update)
    print_eval_results(run, result)
    if run_option is not None:  # after the work, so an error stays one line
        err_console.print("note: --run is deprecated; give RUN as the first argument (add --create for a new folder)",
                          soft_wrap=True)
