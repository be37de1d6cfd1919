"""What the CLI shows: tables and progress lines for the commands in :mod:`workbench.cli`.

Plain output goes to stdout (``console``); the one ``error:`` line and live views go to stderr
(``err_console``), so a failing command's stderr stays one line.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from workbench.metrics import ACCURACY, F1, NDCG_AT_10, RECALL_AT_100

# markup off: messages quote user input and config syntax ([run.quotas], PATH[@SYSTEM]) that rich would
# take for style tags and drop; soft wrap: a long line stays one line in a log file (tables still fit)
console = Console(markup=False, soft_wrap=True)
err_console = Console(stderr=True, markup=False, soft_wrap=True)


def print_left_out(left_out: dict[str, str]) -> None:
    """Each language the plan leaves out, with the reason, once."""
    for code, reason in left_out.items():
        err_console.print(f"left out {code}: {reason}", highlight=False)


def print_plan_summary(run, result) -> None:
    """Slots per language and task family, and where the plan is (or that it was already current)."""
    import polars as pl

    from workbench.families import FAMILY_NAMES
    from workbench.run import Folder

    codes = run.table_languages(Folder.PLAN)
    state = "already current, nothing rewritten" if result.current else "written"
    summary = f"plan {state}: {sum(result.outputs.values())} slots in {run.stage_dir(Folder.PLAN)}"
    if not codes:
        console.print(summary)
        return
    # counted lazily over two columns: a plan of a million slots is never held in memory here
    counts = pl.scan_parquet([run.table_path(Folder.PLAN, code) for code in codes], glob=False).group_by("language", "family").len().collect()
    table = Table(title=f"plan: {run.root}")
    table.add_column("language")
    for name in FAMILY_NAMES:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    for code in codes:
        per = {r["family"]: r["len"] for r in counts.filter(pl.col("language") == code).iter_rows(named=True)}
        table.add_row(code, *[str(per.get(n, 0)) for n in FAMILY_NAMES], str(sum(per.values())))
    console.print(table)
    console.print(summary)


def print_dry_run(stats: dict, *, what: str = "nothing sent") -> None:
    """A generation estimate: per language slots, requests, tokens and cost, then the totals."""
    table = Table(title=f"dry run: {stats['model']} ({what})")
    for column in ("language", "slots", "requests", "prompt tok", "completion tok", "est. $"):
        table.add_column(column, justify="left" if column == "language" else "right")
    for code, info in sorted(stats["per_language"].items()):
        table.add_row(code, f"{info.get('slots', 0):,}", f"{info['requests']:,}", f"{info.get('est_prompt_tokens', 0):,}",
                      f"{info.get('est_completion_tokens', 0):,}", f"{info.get('est_cost_usd', 0):,.4f}")
    console.print(table)
    cost = f"${stats['est_cost_usd']:,.4f}" if stats["price_known"] else "unknown (no price for this model in generate.prices)"
    budgets = ", ".join(f"{family} {low}-{high}" if low != high else f"{family} {low}"
                        for family, (low, high) in stats.get("max_tokens_by_family", {}).items())
    console.print(f"slots: {stats.get('slots', 0):,}\n"
                  f"requests: {stats['requests']:,} ({stats['brainstorm_requests']:,} brainstorm, "
                  f"{stats['example_requests']:,} examples; {stats['already_cached']:,} already cached)\n"
                  f"estimated tokens: {stats['est_prompt_tokens']:,} prompt + {stats['est_completion_tokens']:,} completion\n"
                  + (f"max_tokens per example request: {budgets}\n" if budgets else "")
                  + f"estimated cost: {cost}" + (" (Batch API price)" if stats.get("batch") else "")
                  + (" (scaled from a sample of each language's plan)" if stats.get("scaled") else ""),
                  highlight=False, markup=False)


def print_plan_estimate(run, config, registry) -> None:
    """``plan --dry-run`` / ``run --dry-run``: what the config's plan would take to generate, less
    what the run's request cache already holds; nothing is written."""
    from workbench.plan import MAX_PLAN_SLOTS, estimate_plan, resolve_quotas

    quotas, left_out = resolve_quotas(config.run, registry)
    stats = estimate_plan(config, registry, quotas, cache_path=run.cache_path)
    print_dry_run(stats, what="nothing written, nothing sent")
    for code, reason in left_out.items():
        console.print(f"left out {code}: {reason}", highlight=False, markup=False)
    if stats["slots"] > MAX_PLAN_SLOTS:
        console.print(f"note: {stats['slots']:,} slots is above the bound of {MAX_PLAN_SLOTS:,} per run: "
                      "'workbench plan' refuses this plan (docs/scale.md)", highlight=False, markup=False)


class GenerateProgress:
    """The engine's counters: a rich live view (per-language bars, rate, errors, tokens, cost, ETA) on a
    terminal; elsewhere (a log file, CI) one plain line every ``every_s`` seconds and one at the end.

    The live view draws on stderr; plain lines go to stdout, so a failing command's stderr stays the
    one ``error:`` line.
    """

    def __init__(self, output: Console | None = None, every_s: float = 30.0) -> None:
        from rich.live import Live

        self.console = output or (err_console if err_console.is_terminal else console)
        self.every_s = every_s
        self.last_line: str | None = None
        self.state = None
        self.closed = False
        self.last_line_at: float | None = None
        self.live = (Live(get_renderable=self._render, console=self.console, refresh_per_second=4, transient=True)
                     if self.console.is_terminal else None)

    def __enter__(self) -> "GenerateProgress":
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        if self.live is not None and not self.live.is_started and not self.closed:
            self.live.start(refresh=True)

    def close(self) -> None:
        """Stop the live view, or print the last plain line; later updates are ignored."""
        if self.closed:
            return
        self.closed = True
        if self.live is not None:
            if self.live.is_started:
                self.live.stop()
        elif self.state is not None:
            self._print_line()

    def update(self, state) -> None:
        import time

        if self.closed:
            return
        self.state = state
        if self.live is not None:
            self._start()  # `workbench run` starts the view at generate's first update
        elif self.last_line_at is None or time.monotonic() - self.last_line_at >= self.every_s:
            self._print_line()

    def _print_line(self) -> None:
        import time

        self.last_line_at = time.monotonic()
        line = self.line(self.state)
        if line != self.last_line:  # the closing line repeats nothing already printed
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
            self.last_line = line

    def line(self, state) -> str:
        return progress_line(state)

    def _render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        state = self.state
        if state is None:
            return Text("starting…")
        table = Table(box=None, show_header=True, pad_edge=False)
        for column in ("language", "", "done", "ok", "failed"):
            table.add_column(column, justify="right" if column in ("done", "ok", "failed") else "left")
        codes = sorted(state.planned)
        shown = codes if len(codes) <= 12 else sorted(codes, key=lambda c: state.done[c] / max(1, state.planned[c]))[:12]
        for code in shown:
            planned = state.planned[code]
            table.add_row(code, ProgressBar(total=max(1, planned), completed=state.done[code], width=30),
                          f"{state.done[code]}/{planned}", str(state.ok[code]), str(state.failed[code]))
        return Group(table, Text(progress_line(state)))


class StageProgress(GenerateProgress):
    """Train and eval in the generate view's style: on a terminal a bar and one live line (stderr);
    elsewhere the line as plain text on stdout at the first update, every ``every_s`` seconds and at
    the end. The states are :class:`workbench.progress.TrainProgress` and ``EvalProgress``."""

    def update(self, state) -> None:
        if self.live is None and not self.closed and self.state is not None and state is not self.state:
            self._print_line()  # eval moved to the next target or system: the last line of the one before,
            self.last_line_at = None  # and the new one's first line at once
        super().update(state)

    def line(self, state) -> str:
        from workbench.progress import TrainProgress

        return train_line(state) if isinstance(state, TrainProgress) else eval_line(state)

    def _render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        state = self.state
        if state is None:
            return Text("starting…")
        done, total = (state.step, state.steps) if hasattr(state, "steps") else (state.done, state.total)
        bar = ProgressBar(total=max(1, total), completed=done, width=40) if total else ProgressBar(total=None, width=40)
        return Group(bar, Text(self.line(state)))


class PipelineProgress:
    """``workbench run``: one line per stage state, and the live views of generate, train and eval
    (each closed once its stage is over, all of them at the end)."""

    def __init__(self) -> None:
        self.views = {"generate": GenerateProgress(), "train": StageProgress(), "eval": StageProgress()}
        self.progress = {name: view.update for name, view in self.views.items()}

    def __enter__(self) -> "PipelineProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        for view in self.views.values():
            view.close()

    def on_stage(self, stage: str, state: str) -> None:
        from rich.text import Text

        for name, view in self.views.items():
            if view.state is not None and (name != stage or state.startswith(("done", "skipped"))):
                view.close()  # that stage is over: its live view gives way to the stage lines
        console.print(Text.assemble((stage, "bold"), f": {state}"), highlight=False)


def _eta(done: float, total: float, elapsed: float) -> str:
    """Time left at the rate so far: the rest divided by done per second; unknown before the first unit."""
    if total and done >= total:
        return "done"
    if done and elapsed > 0 and total:
        return duration((total - done) / (done / elapsed))
    return "unknown"


def train_line(state) -> str:
    """One line of training progress: steps, the last loss, elapsed time, seconds per step, ETA."""
    import time

    elapsed = time.monotonic() - state.started
    loss = "—" if state.loss is None else f"{state.loss:.4f}"
    pace = f"{elapsed / state.step:.2f} s/step" if state.step else "— s/step"
    return (f"train: step {state.step}/{state.steps} · loss {loss} · elapsed {duration(elapsed)} · {pace} · "
            f"ETA {_eta(state.step, state.steps, elapsed)}")


def eval_line(state) -> str:
    """One line of eval progress: target k of n, task, language, system, texts embedded, passages/s, ETA
    (of this system on this target; the targets after it are counted, not timed)."""
    import time

    elapsed = time.monotonic() - state.started
    where = f"eval {state.section}/{state.sections}: {state.task}"
    where += f" · {state.subset}" if state.subset else ""
    where += f" · {state.system}"
    if not state.total:  # nothing counted yet: BM25, a passkey cell, or a sharded job (its count is on stderr)
        return f"{where} · elapsed {duration(elapsed)}"
    rate = state.done / elapsed if elapsed > 0 else 0.0
    side = f" {state.side}" if state.side in ("queries", "documents") else ""  # bitext: every text is a sentence
    return (f"{where} ·{side} {state.done:,}/{state.total:,} texts · {rate:.1f} passages/s · "
            f"elapsed {duration(elapsed)} · ETA {_eta(state.done, state.total, elapsed)}")


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_line(state) -> str:
    """One line of generation progress: slots, elapsed time, ETA, requests, errors, tokens, cost.

    The ETA divides the slots still open by the rate at which slots finished since the engine
    started counting; it is unknown until one slot has finished.
    """
    import time

    total, done = sum(state.planned.values()), sum(state.done.values())
    elapsed = time.monotonic() - state.started
    if done >= total:
        eta = "done"
    elif done and elapsed > 0:
        eta = duration((total - done) / (done / elapsed))
    else:
        eta = "unknown"
    errors = ", ".join(f"{k}={v}" for k, v in sorted(state.errors.items())) or "none"
    truncated = sum(state.truncated.values())
    waiting = getattr(state, "waiting", "")
    return (f"{state.phase or 'starting'}: {done}/{total} slots · elapsed {duration(elapsed)} · ETA {eta} · "
            f"{state.sent} requests ({state.rate():.1f}/s) · {state.cached} cached · invalid {state.invalid} · "
            f"truncated {truncated} · errors {errors}" + (f" · {waiting}" if waiting else "")
            + f" · tokens {state.prompt_tokens:,}+{state.completion_tokens:,} · ${state.cost_usd:,.4f}")


def print_generate_summary(result) -> None:
    stats = result.stats
    if not result.outputs:
        jobs = stats.get("batch_jobs") or {}
        console.print(f"batch mode: {sum(jobs.values())} requests in {len(jobs)} open batch(es): "
                      f"{', '.join(sorted(jobs))}; run 'workbench batch collect RUN' when they are done")
        return
    table = Table(title=f"generate: {stats['model']} ({stats['structured_output']})")
    for column in ("language", "planned", "ok", "failed", "prompt tok", "completion tok", "cost $"):
        table.add_column(column, justify="left" if column == "language" else "right")
    usage: dict[str, list[float]] = {}
    for row in stats.get("usage", []):
        totals = usage.setdefault(row["language"], [0, 0, 0.0])
        totals[0] += row["prompt_tokens"]
        totals[1] += row["completion_tokens"]
        totals[2] += row["cost_usd"]
    for code, info in sorted(stats["per_language"].items()):
        prompt_tok, completion_tok, cost = usage.get(code, [0, 0, 0.0])
        table.add_row(code, str(info["planned"]), str(info["ok"]), str(info["failed"]), f"{prompt_tok:,}",
                      f"{completion_tok:,}", f"{cost:,.4f}")
    console.print(table)
    families: dict[str, list[float]] = {}
    for row in stats.get("usage", []):
        totals = families.setdefault(row["family"], [0, 0.0])
        totals[0] += row["prompt_tokens"] + row["completion_tokens"]
        totals[1] += row["cost_usd"]
    if families:
        console.print("per family (tokens, $): " + "; ".join(
            f"{name} {tok:,} ${cost:,.4f}" for name, (tok, cost) in sorted(families.items())))
    errors = ", ".join(f"{k}={v}" for k, v in sorted(stats["errors"].items())) or "none"
    cost = (f"${stats['cost_usd']:,.4f} this invocation, ${stats.get('total_cost_usd', 0):,.4f} for the run"
            if stats["price_known"] else "unknown (no price for this model)")
    truncated = sum((stats.get("truncated") or {}).values())
    console.print(f"requests sent {stats['requests_sent']}, cached {stats['cached']}, invalid answers "
                  f"{stats['invalid_answers']}, truncated answers {truncated} (failed after a larger re-send: "
                  f"{stats.get('truncated_failed', 0)}), transport errors {errors}; tokens {stats['prompt_tokens']:,} prompt + "
                  f"{stats['completion_tokens']:,} completion; cost {cost}", highlight=False, markup=False)
    if stats.get("unfinished"):  # stdout: stderr of a command that stops short is its one error line
        console.print(f"{stats['unfinished']} slot(s) unfinished"
                      + (" (--max-cost reached)" if stats.get("budget_hit") else "")
                      + "; re-run the same command to resume", highlight=False, markup=False)


def print_collected(result) -> None:
    """``workbench batch collect``: what the finished batches held, then the generation summary."""
    got = result.stats.get("collected", {})
    console.print(f"collected: {got.get('ok', 0)} ok, {got.get('failed', 0)} failed, "
                  f"{got.get('resubmit', 0)} to resubmit, {got.get('open_batches', 0)} batch(es) still running")
    print_generate_summary(result)


def print_salvage(saved: dict) -> None:
    """``generate --salvage-cache``: whether the request cache was damaged, and what was kept."""
    if saved["kept"] is None:
        console.print("request cache checked: not damaged, left as it is", highlight=False, markup=False)
    else:
        console.print(f"request cache salvaged: {saved['kept']} request(s) kept, {saved['unreadable']} unreadable "
                      f"(sent again); the damaged file is kept as {saved['damaged']}", highlight=False, markup=False)


def print_proposal(proposal) -> None:
    """The next-round quotas that 'plan --from-report' is about to plan."""
    table = Table(title="proposed quotas (from the gap report)")
    for header in ("language", "tier", "gap", "acceptance", "weight", "quota", "est. $", "basis"):
        table.add_column(header, justify="left" if header in ("language", "tier", "basis") else "right")
    for r in proposal.iter_rows(named=True):
        table.add_row(r["language"], r["tier"], "" if r["gap"] is None else f"{r['gap']:.1f}",
                      "" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.0%}",
                      "" if r["weight"] is None else f"{r['weight']:.1f}", str(r["quota"]),
                      "" if r["est_cost_usd"] is None else f"{r['est_cost_usd']:.2f}", r["basis"])
    console.print(table)


# --- languages, filter, batches, status ----------------------------------------------------------
def print_languages(records: list[dict], output_format: str) -> None:
    """``workbench languages``: the registry rows as a table (essential columns on a narrow terminal),
    JSON or CSV (always every column)."""
    import csv
    import io
    import json

    import typer

    from workbench.errors import WorkbenchError
    from workbench.languages import LID_MODELS

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
            "lid_models": f"{rec['lid_models']}/{len(LID_MODELS)}",
        }
        table.add_row(*(cells[key] for key, _ in columns))
    console.print(table)


class FilterProgress:
    """filter's bar (records done of all, time left) on a terminal, on stderr; nothing elsewhere."""

    def __enter__(self) -> "FilterProgress":
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("filter"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=err_console, transient=True, disable=not err_console.is_terminal)
        self.bar.__enter__()
        self.task = self.bar.add_task("filter", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def update(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)


def print_filter_summary(run, result) -> None:
    """Per language: generated ok, accepted, rejected (or one line when filter was already current)."""
    languages = result.stats.get("languages", {})
    if result.current:
        console.print(f"filter already current for {len(languages)} language(s), nothing rewritten")
        return
    table = Table(title=f"filter: {run.root}")
    for column in ("language", "generated ok", "accepted", "rejected"):
        table.add_column(column, justify="right" if column != "language" else "left")
    for code, counts in sorted(languages.items()):
        table.add_row(code, str(counts["generated_ok"]), str(counts["accepted"]), str(counts["rejected"]))
    console.print(table)


def print_batches(rows: list[dict]) -> None:
    """``workbench batch status``: the run's open batches and their request counts."""
    if not rows:
        console.print("no open batches")
        return
    table = Table(title="batches")
    for column in ("batch_id", "status", "requests", "completed", "failed"):
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(row[c]) for c in ("batch_id", "status", "requests", "completed", "failed")])
    console.print(table)


def print_status(run_dir, rows: list[dict]) -> None:
    """Each stage's state, row counts, cost and finish time (:func:`workbench.status.run_status`)."""
    table = Table(title=f"run: {run_dir}")
    for column in ("stage", "status", "tables", "rows", "cost (USD)", "finished"):
        table.add_column(column)
    for row in rows:
        cost = "" if row["cost_usd"] is None else f"{row['cost_usd']:.4f}"
        table.add_row(row["stage"], row["status"], str(row["tables"]), str(row["rows"]), cost,
                      row["finished_at"] or "")
    console.print(table)


def print_pipeline_end(run, rows: list[dict]) -> None:
    """``workbench run``, at the end: the run's status and where its report is (when it wrote one)."""
    from workbench.run import Folder

    print_status(run.root, rows)
    report = run.stage_dir(Folder.REPORT) / "index.html"
    if report.is_file():
        console.print(f"report: {report.resolve()}")


# --- train, eval ---------------------------------------------------------------------------------
def _item_table(title: str, rows) -> Table:
    table = Table(title=title)
    table.add_column("item")
    table.add_column("value", justify="right")
    for item, value in rows:
        table.add_row(item, value)
    return table


def print_train_estimate(needed) -> None:
    """``train --estimate``: the per-GPU memory and the training schedule, their notes, and whether it
    fits (:class:`workbench.train.stage.TrainingEstimate`; a plan that does not fit ends in its one
    error line, after these tables)."""
    console.print(_item_table("per-GPU memory estimate", needed.memory.rows()))
    for note in needed.memory.notes:
        console.print(f"note: {note}")
    schedule = needed.schedule
    console.print(_item_table("training schedule", schedule.rows() if schedule else [("optimizer steps", needed.why)]))
    for warning in schedule.warnings if schedule else []:
        console.print(f"note: {warning}")
    if needed.fits:
        console.print(f"fits in {needed.gpu_memory_gib:g} GiB per GPU")


def print_train_summary(run, result) -> None:
    """What ``workbench train`` did: steps, records, epochs, loss, and where the model is."""
    from workbench.run import Folder
    from workbench.stagelog import logged_note

    if result.current:
        console.print(f"train already current, nothing rewritten: {run.stage_dir(Folder.TRAIN)}")
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


def print_eval_results(run, result) -> None:
    """``workbench eval``: per system and dataset nDCG@10 | F1, R@100 | accuracy, queries, docs; the
    passkey probe's accuracy by length and depth; the queries left out per dataset (stderr). The rows
    are those of ``eval/results.parquet`` that ``result`` evaluated (also when eval was current)."""
    from workbench.eval.stage import eval_rows
    from workbench.run import Folder
    from workbench.stagelog import logged_note

    if note := logged_note(result.stats if not result.current else None, run.root):
        console.print(f"note: {note}", highlight=False)
    table = Table(title=f"eval: {run.stage_dir(Folder.EVAL) / 'results.parquet'}")
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


def print_eval_estimate(plan, room, run_dir) -> None:
    """``eval --estimate``: passages, tokens, embedding disk and GPU-hours per language, the notes, and
    the disk they take under ``run_dir`` when it fits (:func:`workbench.eval.estimate.estimate_run`; one
    that does not fit ends in its error line, after the table)."""
    from rich import box

    from workbench.eval.estimate import table_header

    table = Table(title=f"eval plan: {plan.title}", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in table_header(plan.gpus):
        table.add_column(column, justify="left" if column == "lang" else "right", no_wrap=True)
    for row in plan.rows():
        table.add_row(*row)
    console.print(table)
    for note in plan.notes:
        console.print(f"note: {note}", soft_wrap=True)
    if room.fits:
        console.print(f"disk: {plan.disk_bytes / 2**30:,.2f} GiB of shards ({room.missing / 2**30:,.2f} GiB not yet "
                      f"written); {room.free / 2**30:,.2f} GiB free under {run_dir}: fits", soft_wrap=True)


# --- report, export --------------------------------------------------------------------------------
def print_report(out, result, *, compared: bool = False) -> None:
    """The report's headline and where it was written (or where ``--compare`` wrote its view)."""
    import json

    if compared:
        console.print(f"comparison written: {out / 'compare.html'} ({result.stats['rows']} rows)")
        return
    meta = json.loads((out / "report.json").read_text())
    for line in meta["headline"]:
        console.print(line, highlight=False, markup=False)
    console.print(f"report written: {out / 'index.html'} (focus: {result.stats['focus']}; primary reference: "
                  f"{meta.get('primary_reference') or 'none comparable'}; references from {meta.get('reference_dir')})",
                  highlight=False, markup=False)


def print_export(info: dict, folder) -> None:
    """``workbench export``: examples and languages written to ``folder``, and the languages left out."""
    total = sum(c["accepted"] for c in info["languages"].values())
    kept = len(info["languages"]) - len(info["left_out"])
    console.print(f"exported {total} examples in {kept} language(s), configs {', '.join(info['configs'])}: {folder}",
                  highlight=False)
    if info["left_out"]:
        console.print(f"left out {', '.join(info['left_out'])}: no accepted rows (no file, not in the card's languages)",
                      highlight=False)
