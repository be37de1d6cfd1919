"""``workbench`` commands for the model stages: train, eval.

Registered on the app in :mod:`workbench.cli`; each parses options and calls one stage function.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from workbench.cli_data import split_values
from workbench.cli_render import StageProgress, console, err_console
from workbench.errors import WorkbenchError
from workbench.metrics import ACCURACY, F1, NDCG_AT_10, RECALL_AT_100
from workbench.stagelog import logged_note


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
    from typing import get_args

    from workbench.config import DeepSpeedMode
    from workbench.runconfig import resolve_run_config
    from workbench.train.stage import estimate_training, run_train

    # the config owns the modes; checked here too so the line names the option, not run.toml
    if deepspeed is not None and deepspeed not in get_args(DeepSpeedMode):
        raise WorkbenchError(f"unknown DeepSpeed mode '{deepspeed}'", where="--deepspeed",
                             fix=f"use {', '.join(get_args(DeepSpeedMode))}")
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
                                     stages=("train",))
    if estimate:
        import os

        from workbench.train.zero import check_fits

        if not config.train.model:
            raise WorkbenchError("no model to estimate", where="train.model", fix="give --model PATH")
        # the fit check comes after the tables are shown
        estimate_result = estimate_training(config)
        table = Table(title="per-GPU memory estimate")
        table.add_column("item")
        table.add_column("value", justify="right")
        for item, value in estimate_result.rows():
            table.add_row(item, value)
        console.print(table)
        for note in estimate_result.notes:
            console.print(f"note: {note}")
        from workbench.train.stage import training_schedule

        schedule, why = training_schedule(run, config, int(os.environ.get("WORLD_SIZE", "1")))
        schedule_table = Table(title="training schedule")
        schedule_table.add_column("item")
        schedule_table.add_column("value", justify="right")
        for item, value in schedule.rows() if schedule else [("optimizer steps", why)]:
            schedule_table.add_row(item, value)
        console.print(schedule_table)
        for warning in schedule.warnings if schedule else []:
            console.print(f"note: {warning}")
        check_fits(estimate_result, config.train)
        console.print(f"fits in {config.train.gpu_memory_gib:g} GiB per GPU")
        return
    with StageProgress() as view:
        result = run_train(run, config, None, progress=view.update)
    if result.current:
        console.print(f"train already current, nothing rewritten: {run.root / 'train'}")
        return
    stats = result.stats
    if note := logged_note(stats, run.root):
        console.print(f"note: {note}", highlight=False)
    if stats.get("skipped"):
        err_console.print("records not built: " + "; ".join(f"{k}: {v}" for k, v in stats["skipped"].items()))
    console.print(
        f"trained {stats.get('steps')} steps on {stats.get('records')} records in {stats.get('seconds')} s "
        f"({stats.get('epochs', 0):.2f} epochs, batch {stats.get('batch_size')}) "
        f"(loss {stats.get('first_loss', 0):.3f} -> {stats.get('last_loss', 0):.3f}); "
        f"model: {stats.get('export') or stats.get('adapter')}"
    )


# --- eval ------------------------------------------------------------------------------------

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
    from workbench.eval.stage import eval_rows, run_eval
    from workbench.eval.targets import EVAL_TASKS
    from workbench.languages import load_registry
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
    if not create and not estimate and not (run_dir / "manifest.json").is_file():
        raise WorkbenchError("not a run directory (no manifest.json)", where=str(run_dir),
                             fix="check the path, or add --create to start a run for this evaluation")
    updates: dict[str, object] = {}
    for key, value in (("model", model), ("task", task), ("system", system), ("split", split),
                       ("batch_size", batch_size), ("pooling", pooling), ("device", device)):
        if value is not None:
            updates[key] = value
    if task is not None and task not in EVAL_TASKS:  # as config checks it, but naming the option
        raise WorkbenchError(f"unknown task '{task}'", where="--task", fix=f"use one of {', '.join(EVAL_TASKS)}")
    if languages:
        updates["languages"] = split_values(languages)
    if hard_negatives is not None:
        updates["corpus"] = "hard-negatives" if hard_negatives else "full"
    if data_dir is not None:
        updates["data_dir"] = str(data_dir)
    if bm25:
        updates["bm25"] = True
    if contract_from is not None:
        updates["contract_from"] = str(contract_from)
    if config_file is None:
        # one `workbench eval` call describes one evaluation: options not given take their defaults
        # rather than whatever an earlier eval left in run.toml
        from workbench.config import EvalSection

        updates = {**EvalSection().model_dump(mode="json"), **updates}
    if estimate:  # a plan, not an evaluation: needs no run directory and writes nothing
        _show_estimate(run_dir, config_file, updates, model=model, gpus=gpus, throughput=throughput,
                       throughput_tokens=throughput_tokens, model_params=model_params, shard_rows=shard_rows)
        return
    run, config = resolve_run_config(run_dir, config_file, {"eval": updates}, create=create, stages=("eval",))
    with StageProgress() as view:
        result = run_eval(run, config, load_registry(), progress=view.update)
    if note := logged_note(result.stats if not result.current else None, run.root):
        console.print(f"note: {note}", highlight=False)
    table = Table(title=f"eval: {run.root / 'eval' / 'results.parquet'}")
    for column in ("system", "dataset", "nDCG@10 | F1", "R@100 | acc", "queries", "docs"):
        table.add_column(column, justify="left" if column in ("system", "dataset") else "right")
    rows = eval_rows(run, result)
    cells = [r for r in rows if r["context_tokens"] is not None]  # the passkey probe: one row per cell
    rows = [r for r in rows if r["context_tokens"] is None]
    for key in sorted({(r["system"], r["dataset"]) for r in rows}):
        values = {r["metric"]: r for r in rows if (r["system"], r["dataset"]) == key}
        ndcg, recall = values.get(NDCG_AT_10) or values[F1], values.get(RECALL_AT_100) or values[ACCURACY]
        table.add_row(*key, f"{ndcg['value']:.1f}", f"{recall['value']:.1f}", str(ndcg["n_queries"]), str(ndcg["n_docs"]))
    if rows or not cells:
        console.print(table)
    if cells:
        passkey = Table(title="passkey: top-1 accuracy (%) by length (encoder tokens) and needle depth")
        depths = sorted({r["needle_depth"] for r in cells})
        for column in ("system", "language", "tokens", "words", *(f"{d:g}%" for d in depths)):
            passkey.add_column(column, justify="left" if column in ("system", "language") else "right")
        for key in sorted({(r["system"], r["language"], r["context_tokens"]) for r in cells}):
            by_depth = {r["needle_depth"]: r for r in cells if (r["system"], r["language"], r["context_tokens"]) == key}
            words = next(iter(by_depth.values()))["context_words_median"]
            passkey.add_row(key[0], key[1], str(key[2]), "-" if words is None else f"{words:.0f}",
                            *(f"{by_depth[d]['value']:.0f}" if d in by_depth else "" for d in depths))
        console.print(passkey)
    for dataset, counts in result.stats["query_counts"].items():
        if counts.get("queries_without_qrels") or counts.get("queries_without_positives"):
            err_console.print(
                f"{dataset}: {counts.get('queries_without_qrels', 0)} queries without qrels left out (as mteb does); "
                f"{counts.get('queries_without_positives', 0)} without a relevant passage kept (score 0)"
            )
    if run_option is not None:  # after the work, so an error stays one line
        err_console.print("note: --run is deprecated; give RUN as the first argument (add --create for a new folder)",
                          soft_wrap=True)


def _show_estimate(run_dir: Path, config_file: Optional[Path], updates: dict[str, object], *, model: Optional[str], gpus: int,
                   throughput: Optional[float], throughput_tokens: Optional[float], model_params: Optional[float],
                   shard_rows: Optional[int]) -> None:
    """``workbench eval RUN --estimate``: the per-language plan, then the disk check (one error line)."""
    from workbench.eval.estimate import check_disk, estimate, table_header
    from workbench.languages import load_registry
    from workbench.runconfig import resolve_run_config

    _, config = resolve_run_config(run_dir, config_file, {"eval": updates}, create=True, write=False)
    plan = estimate(config.eval, load_registry(), model=model, gpus=max(1, gpus), throughput=throughput,
                    throughput_tokens=throughput_tokens, model_params=model_params, shard_rows_override=shard_rows)
    table = Table(title=f"eval plan: {plan.title}", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in table_header(plan.gpus):
        table.add_column(column, justify="left" if column == "lang" else "right", no_wrap=True)
    for row in plan.rows():
        table.add_row(*row)
    console.print(table)
    for note in plan.notes:
        console.print(f"note: {note}", soft_wrap=True)
    missing, free = check_disk(run_dir, plan.disk_bytes)
    console.print(f"disk: {plan.disk_bytes / 2**30:,.2f} GiB of shards ({missing / 2**30:,.2f} GiB not yet written); "
                  f"{free / 2**30:,.2f} GiB free under {run_dir}: fits", soft_wrap=True)

