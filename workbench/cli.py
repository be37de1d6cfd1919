"""The ``workbench`` command line: parses options, builds typed configs, calls one stage function.

Every stage lives in its own module; this file holds no stage logic. A :class:`WorkbenchError`
anywhere becomes one line on stderr and exit status 2, with no traceback.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from workbench.errors import WorkbenchError

app = typer.Typer(
    name="workbench",
    help="Multilingual E5 synthetic-data workbench: plan, generate, filter, audit, train, eval, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def main() -> None:
    """Console-script entry point: one clear line and exit 2 on any user-facing error."""
    try:
        app(standalone_mode=False)
    except WorkbenchError as err:
        err_console.print(f"[bold red]error:[/] {err.line()}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted: finished work is kept; re-run the same command to resume")
        sys.exit(130)
    except Exception as err:  # click usage errors and friends
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        raise


def _split(values: Optional[list[str]]) -> list[str]:
    return [token for value in values or [] for token in value.replace(",", " ").split()]


# --- languages (issue 3) --------------------------------------------------------------------
@app.command()
def languages(
    tier: Annotated[Optional[str], typer.Option(help="high, mid or low")] = None,
    miracl: Annotated[bool, typer.Option("--miracl", help="only MIRACL languages")] = False,
    script: Annotated[Optional[str], typer.Option(help="ISO 15924 code, e.g. Arab")] = None,
    eval_only: Annotated[bool, typer.Option("--eval-only/--generation-only", help="eval-only entries (yo)")] = None,  # type: ignore[assignment]
    output_format: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    directory: Annotated[Optional[Path], typer.Option("--dir", help="languages folder")] = None,
) -> None:
    """List the language registry (93 generation languages + eval-only entries)."""
    from workbench.languages import TIERS, load_registry

    registry = load_registry(directory)
    if tier is not None and tier not in TIERS:
        raise WorkbenchError(f"unknown tier '{tier}'", where="--tier", fix="use high, mid or low")
    rows = [
        lang
        for lang in registry
        if (tier is None or lang.tier == tier)
        and (not miracl or lang.miracl)
        and (script is None or script in lang.scripts)
        and (eval_only is None or (lang.role == "eval_only") == eval_only)
    ]
    records = [
        {
            "code": lang.code,
            "iso639_3": lang.iso639_3,
            "name": lang.name,
            "native_name": lang.native_name,
            "scripts": "+".join(lang.scripts),
            "tier": lang.tier,
            "cc100_tokens_m": lang.cc100_tokens_m,
            "role": lang.role,
            "miracl": lang.miracl,
            "tatoeba": lang.tatoeba or "",
            "confusable_group": lang.confusable_group or "",
            "quota": lang.quota,
            "lid_models": len(lang.lid.covered_by()),
        }
        for lang in rows
    ]
    if output_format == "json":
        typer.echo(json.dumps(records, ensure_ascii=False, indent=1))
        return
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]) if records else ["code"])
        writer.writeheader()
        writer.writerows(records)
        typer.echo(buffer.getvalue(), nl=False)
        return
    if output_format != "table":
        raise WorkbenchError(f"unknown format '{output_format}'", where="--format", fix="use table, json or csv")
    table = Table(title=f"{len(records)} languages", show_lines=False, pad_edge=False)
    for column, header in (("code", "code"), ("name", "name"), ("native_name", "native"),
                           ("scripts", "script"), ("tier", "tier"), ("cc100_tokens_m", "CC-100"),
                           ("miracl", "MIRACL"), ("confusable_group", "confusable"),
                           ("quota", "quota"), ("lid_models", "LID")):
        table.add_column(header, no_wrap=column not in ("name", "confusable_group"), overflow="ellipsis")
    for rec in records:
        miracl_mark = "yes" if rec["miracl"] else ""
        name = rec["name"] + (" (eval only)" if rec["role"] == "eval_only" else "")
        tokens = "" if rec["cc100_tokens_m"] is None else f"{rec['cc100_tokens_m']:,.0f}M"
        table.add_row(rec["code"], name, rec["native_name"], rec["scripts"], rec["tier"], tokens,
                      miracl_mark, rec["confusable_group"], str(rec["quota"]), f"{rec['lid_models']}/4")
    console.print(table)


# --- plan (issue 3) -------------------------------------------------------------------------
@app.command()
def plan(
    run_dir: Annotated[Path, typer.Argument(help="run directory (created if missing)")],
    config_file: Annotated[Optional[Path], typer.Option("--config", help="run config TOML")] = None,
    language: Annotated[Optional[list[str]], typer.Option("--languages", "-l", help="codes, tiers (high/mid/low), miracl or all")] = None,
    quota: Annotated[Optional[int], typer.Option(help="examples per language (overrides language files)")] = None,
    families: Annotated[Optional[list[str]], typer.Option(help="subset of task families")] = None,
    seed: Annotated[Optional[int], typer.Option(help="sampling seed")] = None,
) -> None:
    """Write the generation plan: per language, slots per task family with sampled placeholders."""
    from workbench.languages import load_registry
    from workbench.plan import run_plan
    from workbench.runconfig import resolve_run_config

    updates: dict[str, object] = {}
    if language:
        updates["languages"] = _split(language)
    if quota is not None:
        if quota < 1:
            raise WorkbenchError(f"quota {quota} is not allowed", where="--quota", fix="give 1 or more")
        updates["quota"] = quota
    if families:
        updates["families"] = _split(families)
    if seed is not None:
        updates["seed"] = seed
    run, config = resolve_run_config(run_dir, config_file, {"run": updates})
    registry = load_registry()
    result = run_plan(run, config, registry)
    _print_plan_summary(run)
    for code, reason in result.stats.get("left_out", {}).items():
        err_console.print(f"left out {code}: {reason}")
    state = "already current, nothing rewritten" if result.skipped else "written"
    console.print(f"plan {state}: {sum(result.outputs.values())} slots in {run.root / 'plan'}")


def _print_plan_summary(run) -> None:
    import polars as pl

    from workbench.families import FAMILY_NAMES
    from workbench.plan import read_plan

    tables = read_plan(run)
    if not tables:
        return
    counts = pl.concat(tables.values()).group_by("language", "family").len()
    table = Table(title=f"plan: {run.root}")
    table.add_column("language")
    for name in FAMILY_NAMES:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    for code in sorted(tables):
        per = {r["family"]: r["len"] for r in counts.filter(pl.col("language") == code).iter_rows(named=True)}
        table.add_row(code, *[str(per.get(n, 0)) for n in FAMILY_NAMES], str(sum(per.values())))
    console.print(table)


# --- generate, batch, serve (issue 4) -------------------------------------------------------




# --- filter, audit (issue 5) ----------------------------------------------------------------




# --- train (issue 6) ------------------------------------------------------------------------




# --- eval (issue 7) -------------------------------------------------------------------------

@app.command("eval")
def eval_command(
    run_dir: Annotated[Path, typer.Option("--run", help="run directory (results go to RUN/eval/)")] = Path("runs/eval"),
    model: Annotated[
        Optional[str], typer.Option("--model", help="model folder, 'minilm' (the demo wheel) or 'bm25'")
    ] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="miracl | xquad | beir")] = None,
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
    config_file: Annotated[Optional[Path], typer.Option("--config", help="run config TOML")] = None,
) -> None:
    """Evaluate a model (and/or BM25) with mteb on MIRACL, XQuAD or any BEIR folder; writes RUN/eval/results.parquet."""
    import logging

    from workbench.eval.stage import run_eval
    from workbench.languages import load_registry
    from workbench.runconfig import resolve_run_config

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    updates: dict[str, object] = {}
    for key, value in (("model", model), ("task", task), ("system", system), ("split", split),
                       ("batch_size", batch_size), ("pooling", pooling), ("device", device)):
        if value is not None:
            updates[key] = value
    if task is not None and task not in ("miracl", "xquad", "beir"):
        raise WorkbenchError(f"unknown task '{task}'", where="--task", fix="use miracl, xquad or beir")
    if languages:
        updates["languages"] = _split(languages)
    if hard_negatives is not None:
        updates["corpus"] = "hard-negatives" if hard_negatives else "full"
    if data_dir is not None:
        updates["data_dir"] = str(data_dir)
    if bm25:
        updates["bm25"] = True
    if config_file is None:
        # one `workbench eval` call describes one evaluation: options not given take their defaults
        # rather than whatever an earlier eval left in run.toml
        from workbench.config import EvalSection

        updates = {**EvalSection().model_dump(mode="json"), **updates}
    run, config = resolve_run_config(run_dir, config_file, {"eval": updates})
    result = run_eval(run, config, load_registry())
    table = Table(title=f"eval: {run.root / 'eval' / 'results.parquet'}")
    for column in ("system", "dataset", "nDCG@10", "R@100", "queries", "docs"):
        table.add_column(column, justify="left" if column in ("system", "dataset") else "right")
    rows = result.stats["rows"]
    for key in sorted({(r["system"], r["dataset"]) for r in rows}):
        values = {r["metric"]: r for r in rows if (r["system"], r["dataset"]) == key}
        ndcg, recall = values["ndcg_at_10"], values["recall_at_100"]
        table.add_row(*key, f"{ndcg['value']:.1f}", f"{recall['value']:.1f}", str(ndcg["n_queries"]), str(ndcg["n_docs"]))
    console.print(table)
    for dataset, counts in result.stats["query_counts"].items():
        if counts.get("queries_without_qrels") or counts.get("queries_without_positives"):
            err_console.print(
                f"{dataset}: {counts.get('queries_without_qrels', 0)} queries without qrels left out (as mteb does); "
                f"{counts.get('queries_without_positives', 0)} without a relevant passage kept (score 0)"
            )





# --- report (issue 8) -----------------------------------------------------------------------




# --- run, status (issue 9) ------------------------------------------------------------------




if __name__ == "__main__":
    main()
