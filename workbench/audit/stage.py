"""Audit stage: per-language statistics of generation and filtering, as tables, JSON and HTML.

Inputs: ``plan/<lang>.parquet`` (planned slots, optional), ``generated/<lang>.parquet`` (ok and
failed rows, tokens, cost, tasks), ``accepted/<lang>.parquet`` and ``rejected/<lang>.parquet``
(reasons, LID verdicts). Outputs in ``audit/``:

* ``summary.parquet`` (AUDIT_SUMMARY): one row per language: planned, generated (ok), failed,
  accepted, rejected, acceptance_rate, top_reject_reasons ("reason:count; ..."),
  top_lid_confusions ("lang:count; ..."), exact/near duplicate rates, distinct tasks,
  ``truncated`` (slots failed because the answer was cut at max_tokens), distinct-2 of the main
  field, tokens and cost;
* ``audit.json``: the same plus per-tier summaries, rejects by reason code and field, the LID
  confusion matrix, per-field length distributions (words; characters for unspaced scripts) and
  ``by_family`` per language: slots, ok, failed, truncated, distinct tasks, most uses of one task;
* ``index.html``: a self-contained page (plots embedded as base64 PNG): acceptance by language
  (sorted), reject reasons stacked per language, the LID confusion heat map, one table row per
  language (accepted, of which accepted as an ``accept_also`` neighbour, rejected by reason), the
  confusion table asked -> detected, and per language a few accepted and rejected examples with
  their reasons and LID votes (HTML-escaped, truncated);
* ``rejects_for_review.jsonl``: every rejected row, one JSON object a line (full texts, reasons,
  LID votes, and an empty ``human_verdict`` for a reviewer to fill in with ``keep`` or ``reject``).

The audit refuses to run on inconsistent inputs: for every language accepted + rejected must
equal the generated rows with status ok (else the filter output is stale: re-run the filter).

Example::

    workbench audit runs/demo
"""

from __future__ import annotations

import json
import time

import polars as pl

from workbench.audit.plots import plots
from workbench.audit.render import render_html
from workbench.audit.stats import EXAMPLE_CHARS, EXAMPLES_PER_LANGUAGE, language_stats, tier_summaries
from workbench.config import RunConfig
from workbench.errors import TableError
from workbench.languages import Registry
from workbench.run import Folder, Run, StageResult, atomic_write_bytes, now
from workbench.runner import Stage, StageInput, run_stage
from workbench.tables import AUDIT_SUMMARY, FILTERED, GENERATED, PLAN

STAGE = "audit"
REVIEW_FILE = "rejects_for_review.jsonl"


def run_audit(run: Run, config: RunConfig, registry: Registry) -> StageResult:
    """Write ``audit/summary.parquet``, ``audit/audit.json`` and ``audit/index.html`` for ``run``,
    through the runner (skipped when current)."""
    return run_stage(run, AUDIT, config, registry)


def write_audit(inputs: StageInput) -> StageResult:
    """The audit stage's body (see the module docstring); it has no settings of its own."""
    run, registry = inputs.run, inputs.registry
    languages = run.table_languages(Folder.GENERATED)
    if not languages:
        raise TableError("no generated tables", where=str(run.stage_dir(Folder.GENERATED)),
                         fix="run 'workbench generate' (and 'workbench filter') first")
    for code in languages:
        registry.get(code)
    result = StageResult(STAGE)
    start = time.perf_counter()
    # Read everything first: a damaged input stops the audit before any output is written.
    stats = {}
    for code in languages:
        planned = run.read_table(Folder.PLAN, code, PLAN).height if run.has_table(Folder.PLAN, code) else None
        stats[code] = language_stats(
            code, registry, planned,
            run.read_table(Folder.GENERATED, code, GENERATED),
            run.read_table(Folder.ACCEPTED, code, FILTERED),
            run.read_table(Folder.REJECTED, code, FILTERED),
        )
    rows = [stats[c]["summary"] for c in languages]
    details = {c: stats[c]["details"] for c in languages}
    confusion = {c: dict(details[c]["lid_seen_as"]) for c in languages}
    tiers = tier_summaries(rows, registry)
    totals = {key: sum(r[key] for r in rows) for key in
              ("planned", "generated", "failed", "accepted", "rejected", "prompt_tokens", "completion_tokens")}
    totals["cost_usd"] = round(sum(r["cost_usd"] for r in rows), 6)
    totals["accepted_as_neighbour"] = sum(details[c]["accepted_as_neighbour"] for c in languages)
    shown = ("examples_accepted", "examples_rejected")  # in index.html; the review file has every reject
    report = {"run": str(run.root), "created_at": now(), "totals": totals, "tiers": tiers,
              "languages": [{**stats[c]["summary"], **{k: v for k, v in details[c].items() if k not in shown}}
                            for c in languages],
              "lid_confusion": confusion}
    review = b"".join(json.dumps(record, ensure_ascii=False).encode() + b"\n"
                      for c in languages for record in stats[c]["review"])
    html = render_html({"run": run.root.name, "created_at": report["created_at"], "totals": totals,
                        "tiers": tiers, "rows": rows, "details": details,
                        "examples_per_language": EXAMPLES_PER_LANGUAGE, "example_chars": EXAMPLE_CHARS,
                        "plots": plots(rows, details, confusion)})
    out = run.stage_dir(Folder.AUDIT)
    summary_path = run.write_table(Folder.AUDIT, "summary", pl.DataFrame(rows, schema=AUDIT_SUMMARY), AUDIT_SUMMARY)
    atomic_write_bytes(out / "audit.json", json.dumps(report, indent=1, ensure_ascii=False).encode())
    atomic_write_bytes(out / "index.html", html.encode())
    atomic_write_bytes(out / REVIEW_FILE, review)
    result.outputs = {run.relative(summary_path): len(rows), run.relative(out / "audit.json"): len(rows),
                      run.relative(out / "index.html"): len(rows), run.relative(out / REVIEW_FILE): totals["rejected"]}
    result.stats = {"totals": totals, "seconds": round(time.perf_counter() - start, 3)}
    return result


AUDIT = Stage(STAGE, reads=("plan", "generate", "filter"), sections=(), body=write_audit,
              writes=(Folder.AUDIT,), languages=True)
