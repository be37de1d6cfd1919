"""What the CLI shows: tables and progress lines for the commands in :mod:`workbench.cli`.

Plain output goes to stdout (``console``); the one ``error:`` line and live views go to stderr
(``err_console``), so a failing command's stderr stays one line.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

# markup off: messages quote user input and config syntax ([run.quotas], PATH[@SYSTEM]) that rich would
# take for style tags and drop; soft wrap: a long line stays one line in a log file (tables still fit)
console = Console(markup=False, soft_wrap=True)
err_console = Console(stderr=True, markup=False, soft_wrap=True)


def print_left_out(left_out: dict[str, str]) -> None:
    """Each language the plan leaves out, with the reason, once."""
    for code, reason in left_out.items():
        err_console.print(f"left out {code}: {reason}", highlight=False)


def print_plan_summary(run) -> None:
    import polars as pl

    from workbench.families import FAMILY_NAMES

    codes = run.table_languages("plan")
    if not codes:
        return
    # counted lazily over two columns: a plan of a million slots is never held in memory here
    counts = pl.scan_parquet([run.table_path("plan", code) for code in codes], glob=False).group_by("language", "family").len().collect()
    table = Table(title=f"plan: {run.root}")
    table.add_column("language")
    for name in FAMILY_NAMES:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    for code in codes:
        per = {r["family"]: r["len"] for r in counts.filter(pl.col("language") == code).iter_rows(named=True)}
        table.add_row(code, *[str(per.get(n, 0)) for n in FAMILY_NAMES], str(sum(per.values())))
    console.print(table)


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
    if not state.total:
        return f"{where} · elapsed {duration(elapsed)} (ranks without embedding: no passage count)"
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
