"""``workbench`` commands for a run's outputs and the whole pipeline: report, export, run, status.

Registered on the app in :mod:`workbench.cli`; each parses options and calls one stage function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from workbench.cli_render import (
    PipelineProgress,
    console,
    print_export,
    print_left_out,
    print_pipeline_end,
    print_report,
    print_status,
)


# --- report ----------------------------------------------------------------------------------
def report(
    run_dir: Annotated[Optional[Path], typer.Argument(metavar="RUN", help="run directory: reads eval/results.parquet and audit/summary.parquet, writes report/")] = None,
    results: Annotated[Optional[list[Path]], typer.Option("--results", "-r", help="EVAL_RESULTS table; repeat for several (BM25, baseline, fine-tuned)")] = None,
    audit: Annotated[Optional[Path], typer.Option(help="AUDIT_SUMMARY table (default: the run's audit/summary.parquet)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output folder (default: RUN/report)")] = None,
    focus: Annotated[Optional[str], typer.Option(help="system the gaps are about (default: the last non-BM25 system)")] = None,
    reference: Annotated[Optional[str], typer.Option(help="primary reference, e.g. 'multilingual-e5-large (published)'")] = None,
    title: Annotated[Optional[str], typer.Option(help="report title")] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="run config TOML ([report] section)")] = None,
    compare: Annotated[Optional[tuple[str, str]], typer.Option("--compare", help="A B: per-language deltas B - A; each PATH[@SYSTEM], PATH a results table or run dir")] = None,
) -> None:
    """Per-language MIRACL gap report (HTML + Markdown + tidy tables), or --compare A B."""
    from workbench.report.stage import report_from_options

    updates = {k: v for k, v in {"focus": focus, "primary_reference": reference, "title": title}.items() if v is not None}
    written, result = report_from_options(run_dir, config_file, updates, results=results or [], audit=audit, out=out,
                                          compare=compare)
    print_report(written, result, compared=bool(compare and all(compare)))


# --- export: the accepted data as JSONL + dataset card; optional Hub upload ----------------------
def export_command(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory with accepted/ tables")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output folder (default: RUN/export/dataset)")] = None,
    push_to_hub: Annotated[Optional[str], typer.Option("--push-to-hub", help="NAMESPACE/NAME: upload the dataset folder (token: HF_TOKEN)")] = None,
    push_model_to_hub: Annotated[Optional[str], typer.Option("--push-model-to-hub", help="NAMESPACE/NAME: upload the trained model folder")] = None,
    private: Annotated[bool, typer.Option("--private", help="create new Hub repositories as private")] = False,
) -> None:
    """Write accepted/ as JSONL with a Hugging Face dataset card; optionally push data and model to the Hub."""
    from workbench.export import export_dataset, trained_model_dir
    from workbench.export import push_to_hub as push
    from workbench.languages import load_registry
    from workbench.run import Folder
    from workbench.runconfig import resolve_run_config

    run, config = resolve_run_config(run_dir, create=False, write=False)
    model_dir = trained_model_dir(run) if push_model_to_hub else None  # fail before writing anything
    folder = out or run.stage_dir(Folder.EXPORT) / "dataset"
    print_export(export_dataset(run, config, load_registry(), folder), folder)
    if push_to_hub:
        console.print(f"dataset pushed: {push(folder, push_to_hub, 'dataset', private=private)}", highlight=False)
    if model_dir is not None:
        console.print(f"model pushed: {push(model_dir, push_model_to_hub, 'model', private=private)}", highlight=False)


# --- run, status -----------------------------------------------------------------------------
def run_command(
    config_file: Annotated[Path, typer.Argument(metavar="CONFIG", help="run config TOML (see examples/)")],
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="default: runs/<[run] name>")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan's slots, requests, tokens and estimated cost; write nothing")] = False,
) -> None:
    """Run the whole pipeline from one config; stages whose inputs are unchanged are skipped."""
    from workbench.languages import load_registry
    from workbench.pipeline import resolve_pipeline_config, run_pipeline
    from workbench.status import run_status

    registry = load_registry()
    run, config, left_out = resolve_pipeline_config(config_file, run_dir, registry, write=not dry_run)
    if dry_run:
        from workbench.cli_render import print_plan_estimate

        print_left_out(left_out)
        print_plan_estimate(run, config, registry)
        return
    console.print(f"run directory: {run.root}")
    print_left_out(left_out)
    from workbench.generate.engine import generation_notice

    if "generate" in config.pipeline.stages and (notice := generation_notice(config)):
        console.print(f"note: {notice}", highlight=False, soft_wrap=True, markup=False)
    with PipelineProgress() as view:
        run_pipeline(run, config, registry, on_stage=view.on_stage, progress=view.progress)
    print_pipeline_end(run, run_status(run))  # the run this command opened, not a second opening


def status(run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory")]) -> None:
    """Show each stage's state, row counts, cost and finish time for a run."""
    from workbench.status import run_status

    print_status(run_dir, run_status(run_dir))
