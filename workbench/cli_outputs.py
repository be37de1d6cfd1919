"""``workbench`` commands for a run's outputs and the whole pipeline: report, export, run, status.

Registered on the app in :mod:`workbench.cli`; each parses options and calls one stage function.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from workbench.cli_render import GenerateProgress, StageProgress, console, print_left_out
from workbench.errors import WorkbenchError


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
    from workbench.config import RunConfig, load_config, parse_config
    from workbench.languages import load_registry
    from workbench.report.stage import build_report, run_compare, run_report
    from workbench.runconfig import resolve_run_config

    updates = {k: v for k, v in {"focus": focus, "primary_reference": reference, "title": title}.items() if v is not None}
    if run_dir is not None and not compare and (out is None or out == run_dir / "report"):
        # the report stage over the run (through the runner); --results and --audit join its [report] section,
        # after the tables it already names
        _, named = resolve_run_config(run_dir, config_file, create=False, write=False)
        joined = list(dict.fromkeys([*named.report.results, *(str(p) for p in results or [])]))
        extra = {"results": joined if results else None, "audit": str(audit) if audit else None}
        run, config = resolve_run_config(run_dir, config_file, {"report": {**updates, **{
            k: v for k, v in extra.items() if v}}}, create=False, stages=("report",))
        if not (run_dir / "eval" / "results.parquet").is_file() and not config.report.results:
            raise WorkbenchError("no eval/results.parquet in this run and no --results given", where=str(run_dir),
                                 fix="run 'workbench eval' first or pass --results PATH")
        result = run_report(run, config, load_registry())
        _print_report(run.stage_dir("report"), result)
        return
    if run_dir is not None:
        run, config = resolve_run_config(run_dir, config_file, {"report": updates}, create=False, stages=("report",))
        section = config.report
    else:
        base = load_config(config_file) if config_file else RunConfig()
        section = parse_config({**base.model_dump(mode="json"), "report": {**base.report.model_dump(mode="json"), **updates}},
                               where="command line").report
    if out is None:
        if run_dir is None:
            raise WorkbenchError("no output folder", where="--out", fix="give --out DIR or a run directory")
        out = run_dir / "report"
    registry = load_registry()
    if compare and all(compare):
        result = run_compare(compare[0], compare[1], out, registry=registry)
        console.print(f"comparison written: {out / 'compare.html'} ({result.stats['rows']} rows)")
        return
    tables: list[Path] = []
    if run_dir is not None and (run_dir / "eval" / "results.parquet").is_file():
        tables.append(run_dir / "eval" / "results.parquet")
    tables += [Path(p) for p in section.results] + list(results or [])
    audit_path = audit or (Path(section.audit) if section.audit else None)
    if audit_path is None and run_dir is not None and (run_dir / "audit" / "summary.parquet").is_file():
        audit_path = run_dir / "audit" / "summary.parquet"
    _print_report(out, build_report(out, tables, audit=audit_path, config=section, registry=registry))


def _print_report(out: Path, result) -> None:
    meta = json.loads((out / "report.json").read_text())
    for line in meta["headline"]:
        console.print(line, highlight=False, markup=False)
    console.print(f"report written: {out / 'index.html'} (focus: {result.stats['focus']}; primary reference: "
                  f"{meta.get('primary_reference') or 'none comparable'}; references from {meta.get('reference_dir')})",
                  highlight=False, markup=False)


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
    from workbench.runconfig import resolve_run_config

    run, config = resolve_run_config(run_dir, create=False, write=False)
    model_dir = trained_model_dir(run) if push_model_to_hub else None  # fail before writing anything
    folder = out or run.root / "export" / "dataset"
    info = export_dataset(run, config, load_registry(), folder)
    total = sum(c["accepted"] for c in info["languages"].values())
    kept = len(info["languages"]) - len(info["left_out"])
    console.print(f"exported {total} examples in {kept} language(s), configs {', '.join(info['configs'])}: {folder}",
                  highlight=False)
    if info["left_out"]:
        console.print(f"left out {', '.join(info['left_out'])}: no accepted rows (no file, not in the card's languages)",
                      highlight=False)
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
    from workbench.config import load_config
    from workbench.errors import UnknownLanguageError
    from workbench.languages import load_registry
    from workbench.pipeline import run_pipeline
    from workbench.runconfig import resolve_run_config

    registry = load_registry()
    requested = load_config(config_file)
    try:  # before touching the run directory: name the config file and field at fault
        registry.select(requested.run.languages)
        for code in requested.run.quotas:
            registry.get(code)
    except UnknownLanguageError as err:
        raise UnknownLanguageError(err.message, where=f"{config_file}: field 'run.languages'", fix=err.fix) from None
    target = run_dir or Path("runs") / requested.run.name
    from workbench.plan import planned_languages

    # languages the plan leaves out (eval-only, no quota) never reach run.toml's list
    kept, left_out = planned_languages(requested, registry, f"{config_file}: field 'run.languages'") if "plan" in requested.pipeline.stages else (None, {})
    overrides = {"run": {"languages": kept}} if kept is not None else None
    if dry_run:
        from workbench.cli_render import print_plan_estimate

        run, config = resolve_run_config(target, config_file, overrides, write=False)
        print_left_out(left_out)
        print_plan_estimate(run, config, registry)
        return
    run, config = resolve_run_config(target, config_file, overrides, pipeline=True)
    console.print(f"run directory: {run.root}")
    print_left_out(left_out)
    from workbench.generate.engine import generation_notice

    if "generate" in config.pipeline.stages and (notice := generation_notice(config)):
        console.print(f"note: {notice}", highlight=False, soft_wrap=True, markup=False)
    views = {"generate": GenerateProgress(), "train": StageProgress(), "eval": StageProgress()}

    def on_stage(stage: str, state: str) -> None:
        for name, view in views.items():
            if view.state is not None and (name != stage or state.startswith(("done", "skipped"))):
                view.close()  # that stage is over: its live view gives way to the stage lines
        console.print(Text.assemble((stage, "bold"), f": {state}"), highlight=False)

    try:
        run_pipeline(run, config, registry, on_stage=on_stage, progress={name: v.update for name, v in views.items()})
    finally:
        for view in views.values():
            view.close()
    status(run.root)
    report = run.stage_dir("report") / "index.html"
    if report.is_file():
        console.print(f"report: {report.resolve()}")


def status(run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory")]) -> None:
    """Show each stage's state, row counts, cost and finish time for a run."""
    from workbench.status import run_status

    table = Table(title=f"run: {run_dir}")
    for column in ("stage", "status", "tables", "rows", "cost (USD)", "finished"):
        table.add_column(column)
    for row in run_status(run_dir):
        cost = "" if row["cost_usd"] is None else f"{row['cost_usd']:.4f}"
        table.add_row(row["stage"], row["status"], str(row["tables"]), str(row["rows"]), cost,
                      row["finished_at"] or "")
    console.print(table)
