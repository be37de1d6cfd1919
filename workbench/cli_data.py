"""``workbench`` commands for the data stages: languages, plan, generate, batch, serve, filter, audit.

Registered on the app in :mod:`workbench.cli`; each parses options and calls one stage function.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from workbench.cli_render import (
    FilterProgress,
    GenerateProgress,
    console,
    print_batches,
    print_collected,
    print_dry_run,
    print_filter_summary,
    print_generate_summary,
    print_languages,
    print_left_out,
    print_plan_estimate,
    print_plan_summary,
    print_proposal,
    print_salvage,
)
from workbench.errors import WorkbenchError


def split_values(values: Optional[list[str]]) -> list[str]:
    """Repeated or comma/space-separated option values as one list."""
    return [token for value in values or [] for token in value.replace(",", " ").split()]


# --- languages -------------------------------------------------------------------------------
def languages(
    tier: Annotated[Optional[str], typer.Option(help="high, mid or low")] = None,
    miracl: Annotated[bool, typer.Option("--miracl", help="only MIRACL languages")] = False,
    script: Annotated[Optional[str], typer.Option(help="ISO 15924 code, e.g. Arab")] = None,
    eval_only: Annotated[bool, typer.Option("--eval-only/--generation-only", help="eval-only entries (yo)")] = None,  # type: ignore[assignment]
    output_format: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    directory: Annotated[Optional[Path], typer.Option("--dir", help="languages folder")] = None,
) -> None:
    """List the language registry (93 generation languages + eval-only entries)."""
    from workbench.languages import load_registry, registry_listing

    records = registry_listing(load_registry(directory), tier=tier, miracl=miracl, script=script, eval_only=eval_only)
    print_languages(records, output_format)


# --- plan ------------------------------------------------------------------------------------
def plan(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory (created if missing)")],
    config_file: Annotated[Optional[Path], typer.Option("--config", help="run config TOML")] = None,
    language: Annotated[Optional[list[str]], typer.Option("--languages", "-l", help="codes, tiers (high/mid/low), miracl or all")] = None,
    quota: Annotated[Optional[int], typer.Option(help="examples per language (overrides language files)")] = None,
    families: Annotated[Optional[list[str]], typer.Option(help="subset of task families")] = None,
    seed: Annotated[Optional[int], typer.Option(help="sampling seed")] = None,
    from_report: Annotated[Optional[Path], typer.Option("--from-report", help="gap report folder: quotas weighted to the largest gaps and lowest acceptance")] = None,
    budget: Annotated[Optional[str], typer.Option(help="total for --from-report: examples (5000) or dollars ($20)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print slots, requests, tokens and estimated cost; write nothing")] = False,
) -> None:
    """Write the generation plan: per language, slots per task family with sampled placeholders."""
    from workbench.languages import load_registry
    from workbench.plan import resolve_plan_config, run_plan

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
        updates["languages"] = split_values(language)
    if quota is not None:
        if quota < 1:
            raise WorkbenchError(f"quota {quota} is not allowed", where="--quota", fix="give 1 or more")
        updates["quota"] = quota
    if families:
        updates["families"] = split_values(families)
    if seed is not None:
        updates["seed"] = seed
    registry = load_registry()
    run, config, left_out = resolve_plan_config(run_dir, config_file, updates, registry,
                                                where="--languages" if language else "run.languages", write=not dry_run)
    print_left_out(left_out)
    if dry_run:
        print_plan_estimate(run, config, registry)
        return
    print_plan_summary(run, run_plan(run, config, registry))


# --- generate, batch, serve ------------------------------------------------------------------
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
    salvage_cache: Annotated[bool, typer.Option("--salvage-cache", help="a damaged cache.sqlite: copy its readable answers into a new one first (the damaged file is kept)")] = False,
) -> None:
    """Generate one example per planned slot (brainstorm, then example) with caching and resume."""
    from workbench.generate.stage import run_generate
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
                                     create=False, write=not dry_run, stages=("generate",))
    registry = load_registry()
    if salvage_cache and not dry_run:
        from workbench.generate.cache import salvage

        print_salvage(salvage(run.cache_path))
    if dry_run:
        result = run_generate(run, config, registry, dry_run=True, batch=batch)
        print_dry_run(result.stats)
        return
    from workbench.generate.stage import generation_notice, unfinished_summary

    if notice := generation_notice(config):  # stdout: stderr of a command that fails is its one error line
        console.print(f"note: {notice}", highlight=False, soft_wrap=True, markup=False)
    with GenerateProgress() as progress:
        result = run_generate(run, config, registry, batch=batch, retry_failed=retry_failed, progress=progress.update)
    if result.current:
        console.print("generate already current: nothing sent; the summary of the run that wrote the tables:")
    print_generate_summary(result)
    if result.stats.get("transport_unfinished"):  # exit 2: the run is not done, and says how to finish it
        raise WorkbenchError(f"generation incomplete: {unfinished_summary(result.stats)}", where=str(run.root),
                             fix=f"re-run 'workbench generate {run_dir}' to resume; finished requests are not sent again")




def batch_status_command(run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory")]) -> None:
    """Show the run's open batches and their request counts."""
    from workbench.generate.batch import batch_status
    from workbench.runconfig import resolve_run_config

    run, config = resolve_run_config(run_dir, create=False, write=False)
    print_batches(batch_status(run, config))


def batch_collect_command(run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory")]) -> None:
    """Ingest finished batches into the cache, then submit the next step or write the tables."""
    from workbench.generate.stage import collect
    from workbench.languages import load_registry
    from workbench.runconfig import resolve_run_config

    run, config = resolve_run_config(run_dir, create=False, stages=("generate",))
    print_collected(collect(run, config, load_registry()))


def serve(
    port: Annotated[Optional[int], typer.Option(help="port on 127.0.0.1 (default: a free one)")] = None,
) -> None:
    """Serve the embedded SmolLM2 model (OpenAI-compatible) until Ctrl-C."""
    import time

    from workbench.generate.local import LocalServer

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
def filter_command(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory with generated/<lang>.parquet")],
    config_file: Annotated[Optional[Path], typer.Option("--config", help="run config TOML")] = None,
    allow_confusable: Annotated[Optional[bool], typer.Option("--allow-confusable/--strict-language", help="lenient: accept a language's whole confusable group (ru text in a uk slot); default strict: only the language file's accept_also (bs/hr/sr, id/ms)")] = None,
    lid_threshold: Annotated[Optional[float], typer.Option(help="weighted LID vote share needed to accept")] = None,
    workers: Annotated[Optional[int], typer.Option(help="processes (0 = all cores)")] = None,
) -> None:
    """Filter generated examples: LID ensemble, script check, rules per family, dedup -> accepted/, rejected/."""
    from workbench.filter.stage import run_filter
    from workbench.languages import load_registry
    from workbench.runconfig import resolve_run_config

    updates: dict[str, object] = {}
    if allow_confusable is not None:
        updates["allow_confusable"] = allow_confusable
    if lid_threshold is not None:
        updates["lid_threshold"] = lid_threshold
    if workers is not None:
        updates["workers"] = workers
    # create=False: an existing run only (filtering needs generated tables); the run is opened there, once
    run, config = resolve_run_config(run_dir, config_file, {"filter": updates} if updates else None, create=False,
                                     stages=("filter",))
    with FilterProgress() as bar:
        result = run_filter(run, config, load_registry(), progress=bar.update)
    print_filter_summary(run, result)


def audit(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory with generated/, accepted/, rejected/")],
) -> None:
    """Per-language audit: acceptance, reject reasons, LID confusions, dup rates, lengths, cost -> audit/."""
    from workbench.audit import run_audit
    from workbench.languages import load_registry
    from workbench.run import Folder
    from workbench.runconfig import resolve_run_config

    run, config = resolve_run_config(run_dir, create=False, stages=("audit",))
    result = run_audit(run, config, load_registry())
    state = "already current, nothing rewritten" if result.current else "written"
    console.print(f"audit {state}: {run.stage_dir(Folder.AUDIT) / 'index.html'}")
