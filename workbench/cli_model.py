"""``workbench`` commands for the model stages: train, eval.

Registered on the app in :mod:`workbench.cli`; each parses options and calls one stage function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from workbench.cli_data import split_values
from workbench.cli_render import console, err_console
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
    from workbench.train.stage import estimate_training, run_train

    if deepspeed is not None and deepspeed not in ("zero2", "zero3", "none"):
        raise WorkbenchError(f"unknown DeepSpeed mode '{deepspeed}'", where="--deepspeed", fix="use zero2, zero3 or none")
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
    run, config = resolve_run_config(run_dir, config_file, {"train": updates}, create=estimate, write=not estimate)
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
    result = run_train(run, config, None, show_progress=True)
    if result.current:
        console.print(f"train already current, nothing rewritten: {run.root / 'train'}")
        return
    stats = result.stats
    if stats.get("skipped"):
        err_console.print("records not built: " + "; ".join(f"{k}: {v}" for k, v in stats["skipped"].items()))
    for warning in stats.get("schedule_warnings") or []:
        err_console.print(f"warning: {warning}")
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
    task: Annotated[Optional[str], typer.Option("--task", help="miracl | xquad | beir | tatoeba")] = None,
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
) -> None:
    """Evaluate a model (and/or BM25) with mteb on MIRACL, XQuAD or any BEIR folder; writes RUN/eval/results.parquet."""
    import logging

    from workbench.eval.stage import eval_rows, run_eval
    from workbench.eval.targets import EVAL_TASKS
    from workbench.languages import load_registry
    from workbench.runconfig import resolve_run_config

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if run_arg is not None and run_option is not None:
        raise WorkbenchError("RUN given twice", where="--run", fix="drop --run; give RUN as the first argument")
    if run_arg is None and run_option is None:
        raise WorkbenchError("missing argument RUN", where="workbench eval",
                             fix="give a run directory, e.g. 'workbench eval runs/eval --create --model bm25 ...'")
    if run_option is not None:  # the old spelling keeps its old meaning: the folder is created when missing
        create = True
    run_dir = run_arg if run_arg is not None else run_option
    if not create and not (run_dir / "manifest.json").is_file():
        raise WorkbenchError("not a run directory (no manifest.json)", where=str(run_dir),
                             fix="check the path, or add --create to start a run for this evaluation")
    updates: dict[str, object] = {}
    for key, value in (("model", model), ("task", task), ("system", system), ("split", split),
                       ("batch_size", batch_size), ("pooling", pooling), ("device", device)):
        if value is not None:
            updates[key] = value
    if task is not None and task not in EVAL_TASKS:
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
    run, config = resolve_run_config(run_dir, config_file, {"eval": updates}, create=create)
    result = run_eval(run, config, load_registry())
    table = Table(title=f"eval: {run.root / 'eval' / 'results.parquet'}")
    for column in ("system", "dataset", "nDCG@10 | F1", "R@100 | acc", "queries", "docs"):
        table.add_column(column, justify="left" if column in ("system", "dataset") else "right")
    rows = eval_rows(run, result)
    for key in sorted({(r["system"], r["dataset"]) for r in rows}):
        values = {r["metric"]: r for r in rows if (r["system"], r["dataset"]) == key}
        ndcg, recall = values.get("ndcg_at_10") or values["f1"], values.get("recall_at_100") or values["accuracy"]
        table.add_row(*key, f"{ndcg['value']:.1f}", f"{recall['value']:.1f}", str(ndcg["n_queries"]), str(ndcg["n_docs"]))
    console.print(table)
    for dataset, counts in result.stats["query_counts"].items():
        if counts.get("queries_without_qrels") or counts.get("queries_without_positives"):
            err_console.print(
                f"{dataset}: {counts.get('queries_without_qrels', 0)} queries without qrels left out (as mteb does); "
                f"{counts.get('queries_without_positives', 0)} without a relevant passage kept (score 0)"
            )
    if run_option is not None:  # after the work, so an error stays one line
        err_console.print("note: --run is deprecated; give RUN as the first argument (add --create for a new folder)",
                          soft_wrap=True)
