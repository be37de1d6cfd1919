"""The ``workbench`` command line: parses options, builds typed configs, calls one stage function.

Every stage lives in its own module; this file holds no stage logic. A :class:`WorkbenchError`
anywhere becomes one line on stderr and exit status 2, with no traceback.
"""

from __future__ import annotations

import _thread
import csv
import errno
import io
import json
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from workbench.cli_errors import click_exception_types, is_connection_error, print_error, usage_error_line
from workbench.cli_render import (  # noqa: F401  (progress_line: reached as workbench.cli.progress_line)
    GenerateProgress,
    console,
    err_console,
    print_dry_run,
    print_generate_summary,
    print_plan_summary,
    print_proposal,
    progress_line,
)
from workbench.errors import WorkbenchError
from workbench.run import command_scope
from workbench.stages import STAGE_NAMES

app = typer.Typer(
    name="workbench",
    help="Multilingual E5 synthetic-data workbench: plan, generate, filter, audit, train, eval, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help renders literally: PATH[@SYSTEM], runs/<[run] name>
)


def _stop_like_ctrl_c_on_sigterm() -> None:
    """SIGTERM stops any command exactly as Ctrl-C does (finished work kept, children stopped), and
    Ctrl-C works even when the process was started with SIGINT ignored (a background job)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: _thread.interrupt_main())


def main() -> None:
    """Console-script entry point: one clear line and exit 2 on any user-facing error."""
    _stop_like_ctrl_c_on_sigterm()
    try:
        with command_scope():
            code = app(prog_name="workbench", standalone_mode=False)
        # typer (>= 0.29) turns Ctrl-C into Exit(130) and, outside standalone mode, returns that code
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except WorkbenchError as err:
        print_error(err.line())
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted: finished work is kept; re-run the same command to resume")
        sys.exit(130)
    except OSError as err:  # a write outside the run-directory helpers (those raise WorkbenchError)
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        print_error(f"{err.filename or 'writing'}: {err.strerror} (free space or fix permissions, then re-run the "
                     "same command; finished work is kept)")
        sys.exit(2)
    except sqlite3.OperationalError as err:
        if "full" not in str(err):
            raise
        print_error(f"request cache: {err} (free space on the run directory's disk, then re-run the same command; "
                     "finished requests are kept)")
        sys.exit(2)
    except Exception as err:  # usage errors (unknown option, bad value, missing argument, unknown command)
        exit_types, usage_types = click_exception_types()
        if isinstance(err, exit_types):
            sys.exit(getattr(err, "exit_code", 0))
        if isinstance(err, usage_types):
            print_error(usage_error_line(err))
            sys.exit(2)
        if is_connection_error(err):  # a network failure no stage turned into its own line
            print_error(f"cannot reach the server ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else 'no answer'}) "
                         "(check the network and --base-url / base_url, then re-run the same command; finished work is kept)")
            sys.exit(2)
        raise


def _split(values: Optional[list[str]]) -> list[str]:
    return [token for value in values or [] for token in value.replace(",", " ").split()]


# --- languages -------------------------------------------------------------------------------
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
    from workbench.languages import SCRIPT_UNICODE_NAMES, TIERS, load_registry, suggest_script

    registry = load_registry(directory)
    if tier is not None and tier not in TIERS:
        fix = f"did you mean {tier.lower()}?" if tier.lower() in TIERS else "use high, mid or low"
        raise WorkbenchError(f"unknown tier '{tier}'", where="--tier", fix=fix)
    if script is not None and script not in SCRIPT_UNICODE_NAMES:
        close = suggest_script(script)
        raise WorkbenchError(f"'{script}' is not an ISO 15924 code this registry knows", where="--script",
                             fix=f"did you mean {close}?" if close else "e.g. Latn, Cyrl, Arab")
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
    # Narrow terminals get the essential columns; --format csv/json always carries everything.
    wide = console.width >= 120
    columns = [("code", "code"), ("name", "name"), ("native_name", "native"), ("scripts", "script"),
               ("tier", "tier"), ("cc100_tokens_m", "CC-100"), ("miracl", "MIRACL"),
               ("confusable_group", "confusable"), ("quota", "quota"), ("lid_models", "LID")]
    if not wide:
        columns = [c for c in columns if c[0] not in ("native_name", "confusable_group", "quota")]
    table = Table(title=f"{len(records)} languages", pad_edge=False)
    for _, header in columns:
        table.add_column(header, no_wrap=True, overflow="ellipsis")
    for rec in records:
        cells = {
            **{key: str(value) for key, value in rec.items()},
            "name": rec["name"] + (" (eval only)" if rec["role"] == "eval_only" else ""),
            "cc100_tokens_m": "" if rec["cc100_tokens_m"] is None else f"{rec['cc100_tokens_m']:,.0f}M",
            "miracl": "yes" if rec["miracl"] else "",
            "lid_models": f"{rec['lid_models']}/4",
        }
        table.add_row(*(cells[key] for key, _ in columns))
    console.print(table)


# --- plan ------------------------------------------------------------------------------------
@app.command()
def plan(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory (created if missing)")],
    config_file: Annotated[Optional[Path], typer.Option("--config", help="run config TOML")] = None,
    language: Annotated[Optional[list[str]], typer.Option("--languages", "-l", help="codes, tiers (high/mid/low), miracl or all")] = None,
    quota: Annotated[Optional[int], typer.Option(help="examples per language (overrides language files)")] = None,
    families: Annotated[Optional[list[str]], typer.Option(help="subset of task families")] = None,
    seed: Annotated[Optional[int], typer.Option(help="sampling seed")] = None,
    from_report: Annotated[Optional[Path], typer.Option("--from-report", help="gap report folder: quotas weighted to the largest gaps and lowest acceptance")] = None,
    budget: Annotated[Optional[str], typer.Option(help="total for --from-report: examples (5000) or dollars ($20)")] = None,
) -> None:
    """Write the generation plan: per language, slots per task family with sampled placeholders."""
    from workbench.languages import load_registry
    from workbench.plan import run_plan
    from workbench.runconfig import resolve_run_config

    updates: dict[str, object] = {}
    if from_report is not None or budget is not None:  # report stage: next round from gaps
        from workbench.report.next_plan import plan_updates_from_report

        if from_report is None:
            raise WorkbenchError("--budget only applies with --from-report", where="--budget", fix="add --from-report REPORT")
        proposed, proposal = plan_updates_from_report(
            from_report, budget, load_registry(), {"--languages": language, "--quota": quota})
        updates.update(proposed)
        print_proposal(proposal)
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
    print_plan_summary(run)
    for code, reason in result.stats.get("left_out", {}).items():
        err_console.print(f"left out {code}: {reason}")
    state = "already current, nothing rewritten" if result.skipped else "written"
    console.print(f"plan {state}: {sum(result.outputs.values())} slots in {run.root / 'plan'}")


# --- generate, batch, serve ------------------------------------------------------------------
@app.command()
def generate(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory with a plan (see 'workbench plan')")],
    config_file: Annotated[Optional[Path], typer.Option("--config", help="run config TOML")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1")] = None,
    local: Annotated[bool, typer.Option("--local", help="start and use the embedded SmolLM2 server")] = False,
    model: Annotated[Optional[str], typer.Option(help="model name the endpoint knows")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="requests in flight at most")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="per-request timeout in seconds")] = None,
    structured_output: Annotated[Optional[str], typer.Option(help="auto, json_schema, llamacpp, json_object or none")] = None,
    max_cost: Annotated[Optional[float], typer.Option("--max-cost", help="stop sending once this many USD are spent")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print requests, tokens and estimated cost; send nothing")] = False,
    batch: Annotated[bool, typer.Option("--batch", help="use the OpenAI Batch API (then 'workbench batch collect RUN')")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="send slots recorded as failed again")] = False,
) -> None:
    """Generate one example per planned slot (brainstorm, then example) with caching and resume."""
    from workbench.generate.engine import run_generate
    from workbench.languages import load_registry
    from workbench.runconfig import resolve_run_config

    if local and base_url:
        raise WorkbenchError("give either --local or --base-url, not both", where="--local")
    updates: dict[str, object] = {}
    for name, value in (("base_url", "local" if local else base_url), ("model", model), ("concurrency", concurrency),
                        ("timeout_s", timeout), ("structured_output", structured_output), ("max_cost_usd", max_cost)):
        if value is not None:
            updates[name] = value
    run, config = resolve_run_config(run_dir, config_file, {"generate": updates} if updates else None,
                                     create=False, write=not dry_run)
    registry = load_registry()
    batch = batch or config.generate.batch
    if dry_run:
        result = run_generate(run, config, registry, dry_run=True, batch=batch)
        print_dry_run(result.stats)
        return
    from workbench.generate.engine import generation_notice, unfinished_summary

    if notice := generation_notice(config):
        err_console.print(f"note: {notice}", highlight=False, soft_wrap=True, markup=False)
    with GenerateProgress() as progress:
        result = run_generate(run, config, registry, batch=batch, retry_failed=retry_failed, progress=progress.update)
    print_generate_summary(result)
    if result.stats.get("transport_unfinished"):  # exit 2: the run is not done, and says how to finish it
        raise WorkbenchError(f"generation incomplete: {unfinished_summary(result.stats)}", where=str(run.root),
                             fix=f"re-run 'workbench generate {run_dir}' to resume; finished requests are not sent again")


batch_app = typer.Typer(help="OpenAI Batch API jobs of a run: status, collect.", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(batch_app, name="batch")


@batch_app.command("status")
def batch_status_command(run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory")]) -> None:
    """Show the run's open batches and their request counts."""
    from workbench.generate.batch import batch_status
    from workbench.runconfig import resolve_run_config

    run, config = resolve_run_config(run_dir, create=False, write=False)
    rows = batch_status(run, config)
    if not rows:
        console.print("no open batches")
        return
    table = Table(title="batches")
    for column in ("batch_id", "status", "requests", "completed", "failed"):
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(row[c]) for c in ("batch_id", "status", "requests", "completed", "failed")])
    console.print(table)


@batch_app.command("collect")
def batch_collect_command(run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory")]) -> None:
    """Ingest finished batches into the cache, then submit the next step or write the tables."""
    from workbench.generate.stage import collect
    from workbench.languages import load_registry
    from workbench.runconfig import resolve_run_config

    run, config = resolve_run_config(run_dir, create=False)
    result = collect(run, config, load_registry())
    got = result.stats.get("collected", {})
    console.print(f"collected: {got.get('ok', 0)} ok, {got.get('failed', 0)} failed, "
                  f"{got.get('resubmit', 0)} to resubmit, {got.get('open_batches', 0)} batch(es) still running")
    print_generate_summary(result)


@app.command()
def serve(
    port: Annotated[Optional[int], typer.Option(help="port on 127.0.0.1 (default: a free one)")] = None,
) -> None:
    """Serve the embedded SmolLM2 model (OpenAI-compatible) until Ctrl-C."""
    import time

    from workbench.generate.local import LocalServer

    import signal

    def _terminate(signum, frame):  # SIGTERM stops the server like Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    server = LocalServer(port).start()
    console.print(f"serving SmolLM2-135M-Instruct at {server.base_url} (model 'smollm2-135m-instruct'); Ctrl-C stops it")
    try:
        while True:
            time.sleep(1)
    finally:
        server.stop()


# --- filter, audit ---------------------------------------------------------------------------
@app.command("filter")
def filter_command(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory with generated/<lang>.parquet")],
    config_file: Annotated[Optional[Path], typer.Option("--config", help="run config TOML")] = None,
    allow_confusable: Annotated[Optional[bool], typer.Option("--allow-confusable/--strict-language", help="lenient: accept a language's whole confusable group (ru text in a uk slot); default strict: only the language file's accept_also (bs/hr/sr, id/ms)")] = None,
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
    run, config = resolve_run_config(run_dir, config_file, {"filter": updates} if updates else None, create=False)
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
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory with generated/, accepted/, rejected/")],
) -> None:
    """Per-language audit: acceptance, reject reasons, LID confusions, dup rates, lengths, cost -> audit/."""
    from workbench.audit import run_audit
    from workbench.languages import load_registry
    from workbench.runconfig import resolve_run_config

    run, config = resolve_run_config(run_dir, create=False)
    result = run_audit(run, config, load_registry())
    state = "already current, nothing rewritten" if result.skipped else "written"
    console.print(f"audit {state}: {run.root / 'audit' / 'index.html'}")


# --- train -----------------------------------------------------------------------------------
@app.command()
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
    from workbench.train.stage import run_train

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
        # the stage computes the estimate once; the fit check comes after the tables are shown
        estimate_result = run_train(run, config, None, estimate_only=True, fit_check=False).stats["estimate"]
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
    if result.skipped:
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

@app.command("eval")
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
    config_file: Annotated[Optional[Path], typer.Option("--config", help="run config TOML")] = None,
) -> None:
    """Evaluate a model (and/or BM25) with mteb on MIRACL, XQuAD or any BEIR folder; writes RUN/eval/results.parquet."""
    import logging

    from workbench.eval.stage import run_eval
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
    if task is not None and task not in ("miracl", "xquad", "beir", "tatoeba"):
        raise WorkbenchError(f"unknown task '{task}'", where="--task", fix="use miracl, xquad, beir or tatoeba")
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
    run, config = resolve_run_config(run_dir, config_file, {"eval": updates}, create=create)
    result = run_eval(run, config, load_registry())
    table = Table(title=f"eval: {run.root / 'eval' / 'results.parquet'}")
    for column in ("system", "dataset", "nDCG@10 | F1", "R@100 | acc", "queries", "docs"):
        table.add_column(column, justify="left" if column in ("system", "dataset") else "right")
    rows = result.stats["rows"]
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


# --- report ----------------------------------------------------------------------------------
@app.command()
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
    from workbench.report.build import run_compare, run_report
    from workbench.run import Run
    from workbench.runconfig import resolve_run_config

    updates = {k: v for k, v in {"focus": focus, "primary_reference": reference, "title": title}.items() if v is not None}
    if run_dir is not None:
        run, config = resolve_run_config(run_dir, config_file, {"report": updates}, create=False)
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
    if not tables and run_dir is not None:
        raise WorkbenchError("no eval/results.parquet in this run and no --results given", where=str(run_dir),
                             fix="run 'workbench eval' first or pass --results PATH")
    audit_path = audit or (Path(section.audit) if section.audit else None)
    if audit_path is None and run_dir is not None and (run_dir / "audit" / "summary.parquet").is_file():
        audit_path = run_dir / "audit" / "summary.parquet"
    result = run_report(out, tables, audit=audit_path, config=section, registry=registry,
                        run=Run.open(run_dir) if run_dir is not None else None)
    for line in result.stats["headline"]:
        console.print(line, highlight=False)
    console.print(f"report written: {out / 'index.html'} (focus: {result.stats['focus']})")


# --- export: the accepted data as JSONL + dataset card; optional Hub upload ----------------------
@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory with accepted/ tables")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output folder (default: RUN/export/dataset)")] = None,
    push_to_hub: Annotated[Optional[str], typer.Option("--push-to-hub", help="NAMESPACE/NAME: upload the dataset folder (token: HF_TOKEN)")] = None,
    push_model_to_hub: Annotated[Optional[str], typer.Option("--push-model-to-hub", help="NAMESPACE/NAME: upload the trained model folder")] = None,
    private: Annotated[bool, typer.Option("--private", help="create new Hub repositories as private")] = False,
) -> None:
    """Write accepted/ as JSONL with a Hugging Face dataset card; optionally push data and model to the Hub."""
    from workbench.export import export_dataset, push_to_hub as push, trained_model_dir
    from workbench.languages import load_registry
    from workbench.runconfig import resolve_run_config

    run, config = resolve_run_config(run_dir, create=False, write=False)
    model_dir = trained_model_dir(run) if push_model_to_hub else None  # fail before writing anything
    folder = out or run.root / "export" / "dataset"
    info = export_dataset(run, config, load_registry(), folder)
    total = sum(c["accepted"] for c in info["languages"].values())
    console.print(f"exported {total} examples in {len(info['languages'])} language(s): {folder}", highlight=False)
    if push_to_hub:
        console.print(f"dataset pushed: {push(folder, push_to_hub, 'dataset', private=private)}", highlight=False)
    if model_dir is not None:
        console.print(f"model pushed: {push(model_dir, push_model_to_hub, 'model', private=private)}", highlight=False)


# --- run, status -----------------------------------------------------------------------------
@app.command("run", help="Run the whole pipeline from one config ("
             + " → ".join(STAGE_NAMES) + "); stages whose inputs are unchanged are skipped.")
def run_command(
    config_file: Annotated[Path, typer.Argument(metavar="CONFIG", help="run config TOML (see examples/)")],
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="default: runs/<[run] name>")] = None,
) -> None:
    """Run the whole pipeline from one config; stages whose inputs are unchanged are skipped."""
    from workbench.config import load_config
    from workbench.languages import load_registry
    from workbench.pipeline import run_pipeline
    from workbench.runconfig import resolve_run_config

    from workbench.errors import UnknownLanguageError

    registry = load_registry()
    requested = load_config(config_file)
    try:  # before touching the run directory: name the config file and field at fault
        registry.select(requested.run.languages)
        for code in requested.run.quotas:
            registry.get(code)
    except UnknownLanguageError as err:
        raise UnknownLanguageError(err.message, where=f"{config_file}: field 'run.languages'", fix=err.fix) from None
    target = run_dir or Path("runs") / requested.run.name
    run, config = resolve_run_config(target, config_file)
    console.print(f"run directory: {run.root}")
    from workbench.generate.engine import generation_notice

    if "generate" in config.pipeline.stages and (notice := generation_notice(config)):
        err_console.print(f"note: {notice}", highlight=False, soft_wrap=True, markup=False)
    view = GenerateProgress()

    def on_stage(stage: str, state: str) -> None:
        if view.state is not None and (stage != "generate" or state.startswith("done")):
            view.close()  # generation is over: the live view gives way to the stage lines
        console.print(f"[bold]{stage}[/]: {state}", highlight=False)

    try:
        run_pipeline(run, config, registry, on_stage=on_stage, generate_progress=view.update)
    finally:
        view.close()
    status(run.root)
    report = run.stage_dir("report") / "index.html"
    if report.is_file():
        console.print(f"report: {report.resolve()}")


@app.command()
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


if __name__ == "__main__":
    main()
