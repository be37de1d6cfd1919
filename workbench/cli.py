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
@app.command("filter")
def filter_command(
    run_dir: Annotated[Path, typer.Argument(help="run directory with generated/<lang>.parquet")],
    config_file: Annotated[Optional[Path], typer.Option("--config", help="run config TOML")] = None,
    allow_confusable: Annotated[Optional[bool], typer.Option("--allow-confusable/--strict-language", help="accept a language's confusable group (ms for id, ...)")] = None,
    lid_threshold: Annotated[Optional[float], typer.Option(help="weighted LID vote share needed to accept")] = None,
    workers: Annotated[Optional[int], typer.Option(help="processes (0 = all cores)")] = None,
) -> None:
    """Filter generated examples: LID ensemble, script check, rules per family, dedup -> accepted/, rejected/."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from workbench.filter.stage import run_filter
    from workbench.languages import load_registry
    from workbench.run import Run
    from workbench.runconfig import resolve_run_config

    Run.open(run_dir)  # an existing run only: filtering needs generated tables
    updates: dict[str, object] = {}
    if allow_confusable is not None:
        updates["allow_confusable"] = allow_confusable
    if lid_threshold is not None:
        updates["lid_threshold"] = lid_threshold
    if workers is not None:
        updates["workers"] = workers
    run, config = resolve_run_config(run_dir, config_file, {"filter": updates} if updates else None)
    registry = load_registry()
    with Progress(TextColumn("filter"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("filter", total=None)
        result = run_filter(run, config, registry, progress=lambda done, total: bar.update(task, completed=done, total=total))
    table = Table(title=f"filter: {run.root}")
    for column in ("language", "generated ok", "accepted", "rejected"):
        table.add_column(column, justify="right" if column != "language" else "left")
    for code, counts in sorted(result.stats.get("languages", {}).items()):
        table.add_row(code, str(counts["generated_ok"]), str(counts["accepted"]), str(counts["rejected"]))
    if result.skipped:
        console.print(f"filter already current for {len(result.skipped)} language(s), nothing rewritten")
    else:
        console.print(table)


@app.command()
def audit(
    run_dir: Annotated[Path, typer.Argument(help="run directory with generated/, accepted/, rejected/")],
) -> None:
    """Per-language audit: acceptance, reject reasons, LID confusions, dup rates, lengths, cost -> audit/."""
    from workbench.audit import run_audit
    from workbench.languages import load_registry
    from workbench.runconfig import resolve_run_config
    from workbench.run import Run

    Run.open(run_dir)
    run, config = resolve_run_config(run_dir)
    result = run_audit(run, config, load_registry())
    state = "already current, nothing rewritten" if result.skipped else "written"
    console.print(f"audit {state}: {run.root / 'audit' / 'index.html'}")


# --- train (issue 6) ------------------------------------------------------------------------




# --- eval (issue 7) -------------------------------------------------------------------------




# --- report (issue 8) -----------------------------------------------------------------------




# --- run, status (issue 9) ------------------------------------------------------------------




if __name__ == "__main__":
    main()
