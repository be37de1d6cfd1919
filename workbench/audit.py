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

import base64
import io
import json
import time
from collections import Counter
from pathlib import Path

import polars as pl

from workbench.config import RunConfig
from workbench.errors import TableError
from workbench.families import FAMILIES
from workbench.filter.script import words
from workbench.generate.budget import TRUNCATED
from workbench.languages import TIERS, Registry
from workbench.run import Run, StageResult, atomic_write_bytes, now
from workbench.runner import Stage, StageInput, run_stage
from workbench.tables import AUDIT_SUMMARY, FILTERED, GENERATED, PLAN

STAGE = "audit"
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
REVIEW_FILE = "rejects_for_review.jsonl"
EXAMPLES_PER_LANGUAGE = 3  # accepted and rejected examples shown per language in index.html
EXAMPLE_CHARS = 240  # each field of a shown example is cut to this many characters


def _reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]


def _top(counter: Counter, k: int = 5) -> str:
    return "; ".join(f"{key}:{count}" for key, count in counter.most_common(k))


def _tokens(text: str, unspaced: bool) -> list[str]:
    return list(text.replace(" ", "")) if unspaced else words(text)


def _cut(text: str | None, limit: int = EXAMPLE_CHARS) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _votes_text(votes: list[dict] | None) -> str:
    """``field: member=label(prob) ...`` per voted field, for one line of the examples table."""
    by_field: dict[str, list[str]] = {}
    for vote in votes or []:
        by_field.setdefault(vote["field"], []).append(f"{vote['member']}={vote['label']}({vote['prob']:.2f})")
    return "; ".join(f"{name}: {' '.join(parts)}" for name, parts in by_field.items())


def _examples(table: pl.DataFrame, k: int) -> list[dict]:
    """The first ``k`` rows by slot: fields (cut), reasons, LID votes; rendered escaped by Jinja."""
    out = []
    for row in table.sort("slot_id").head(k).to_dicts():
        out.append({
            "slot_id": row["slot_id"],
            "family": row["family"],
            "fields": [(name, _cut(row.get(name))) for name in FAMILIES[row["family"]].fields],
            "reasons": ", ".join(row["reasons"] or []) or "accepted",
            "accepted_as": row.get("lid_accepted_as"),
            "lid_language": row.get("lid_language"),
            "votes": _votes_text(row.get("lid_votes")),
        })
    return out


def _review_records(code: str, registry: Registry, rejected: pl.DataFrame) -> list[dict]:
    """One JSON-ready record per rejected row, for human review (full texts)."""
    name = registry.get(code).name
    records = []
    for row in rejected.sort("slot_id").to_dicts():
        records.append({
            "slot_id": row["slot_id"], "language": code, "language_name": name, "family": row["family"],
            "task": row["task"], "fields": {f: row.get(f) for f in FAMILIES[row["family"]].fields},
            "target_language": row.get("target_language"), "reasons": row["reasons"],
            "lid_language": row["lid_language"], "lid_support": row["lid_support"], "lid_votes": row["lid_votes"],
            "model": row["model"], "human_verdict": None,
        })
    return records


def distinct_n(texts: list[str], n: int, unspaced: bool) -> float | None:
    """Distinct n-grams / all n-grams over ``texts`` (words; characters for unspaced scripts)."""
    total = 0
    seen: set[tuple[str, ...]] = set()
    for text in texts:
        tokens = _tokens(text.casefold(), unspaced)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return round(len(seen) / total, 4) if total else None


def _length_stats(values: list[int]) -> dict[str, float]:
    values = sorted(values)
    if not values:
        return {"n": 0}
    pick = lambda q: values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]  # noqa: E731
    return {"n": len(values), "min": values[0], "p10": pick(0.1), "median": pick(0.5), "p90": pick(0.9),
            "max": values[-1], "mean": round(sum(values) / len(values), 1)}


def family_generation_stats(generated: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per family: slots, ok, failed, failed as truncated (answer cut at max_tokens, error
    ``truncated: ...``), distinct tasks and the most examples one task served."""
    stats = {}
    for family in sorted(set(generated["family"].to_list())):
        rows = generated.filter(pl.col("family") == family)
        ok = rows.filter(pl.col("status") == "ok")
        uses = ok["task"].drop_nulls().value_counts()["count"] if ok["task"].drop_nulls().len() else pl.Series([0])
        stats[family] = {
            "slots": rows.height, "ok": ok.height, "failed": rows.height - ok.height,
            "truncated": int(rows["error"].fill_null("").str.starts_with(TRUNCATED).sum()),
            "distinct_tasks": ok["task"].drop_nulls().n_unique(), "max_task_uses": int(uses.max()),
        }
    return stats


def _language_stats(code: str, registry: Registry, planned: int | None, generated: pl.DataFrame,
                    accepted: pl.DataFrame, rejected: pl.DataFrame) -> dict:
    language = registry.get(code)
    ok = generated.filter(pl.col("status") == "ok")
    failed = generated.height - ok.height
    if accepted.height + rejected.height != ok.height:
        raise TableError(
            f"accepted ({accepted.height}) + rejected ({rejected.height}) != generated ok rows ({ok.height})",
            where=f"accepted/{code}.parquet",
            fix="the filter output is stale; re-run 'workbench filter' on this run",
        )
    reasons = Counter()
    reasons_by_field = Counter()
    exact = near = 0
    for row_reasons in rejected["reasons"].to_list():
        codes = {_reason_code(r) for r in row_reasons}
        reasons.update(codes)
        reasons_by_field.update(row_reasons)
        exact += "exact_duplicate" in codes
        near += "near_duplicate" in codes
    both = pl.concat([accepted, rejected])
    accepted_as = Counter(label for label in accepted["lid_accepted_as"].to_list() if label)
    detected = Counter(seen or "-" for seen in both["lid_language"].to_list())  # "-": no LID vote
    detected_accepted = Counter(seen or "-" for seen in accepted["lid_language"].to_list())
    confusions = Counter(seen for seen in both["lid_language"].to_list() if seen and seen != code)
    seen_as = Counter(seen for seen in both["lid_language"].to_list() if seen)
    lengths: dict[str, dict] = {}
    for family in sorted(set(ok["family"].to_list())):
        rows = ok.filter(pl.col("family") == family)
        for name in FAMILIES[family].fields:
            texts = [t for t in rows[name].to_list() if t]
            lengths[f"{family}.{name}"] = _length_stats([len(_tokens(t, language.unspaced)) for t in texts])
    main_fields = sorted({family.main_field for family in FAMILIES.values()})
    main_texts = [
        row[FAMILIES[row["family"]].main_field] or ""
        for row in accepted.select("family", *main_fields).to_dicts()
    ]
    rate = accepted.height / ok.height if ok.height else 0.0
    by_family = family_generation_stats(generated)
    summary = {
        "language": code,
        "planned": planned if planned is not None else generated.height,
        "generated": ok.height,
        "failed": failed,
        "accepted": accepted.height,
        "rejected": rejected.height,
        "acceptance_rate": round(rate, 4),
        "top_reject_reasons": _top(reasons),
        "top_lid_confusions": _top(confusions),
        "exact_dup_rate": round(exact / ok.height, 4) if ok.height else 0.0,
        "near_dup_rate": round(near / ok.height, 4) if ok.height else 0.0,
        "distinct_tasks": ok["task"].drop_nulls().n_unique(),
        "truncated": sum(f["truncated"] for f in by_family.values()),
        "distinct_2": distinct_n(main_texts, 2, language.unspaced),
        "prompt_tokens": int(generated["prompt_tokens"].fill_null(0).sum()),
        "completion_tokens": int(generated["completion_tokens"].fill_null(0).sum()),
        "cost_usd": round(float(generated["cost_usd"].fill_null(0.0).sum()), 6),
    }
    details = {
        "tier": language.tier,
        "name": language.name,
        "rejects_by_reason": dict(reasons.most_common()),
        "rejects_by_reason_and_field": dict(reasons_by_field.most_common()),
        "lid_seen_as": dict(seen_as.most_common()),
        "accepted_plain": accepted.height - sum(accepted_as.values()),
        "accepted_as_neighbour": sum(accepted_as.values()),
        "accepted_as": dict(accepted_as.most_common()),
        "detected": [{"detected": label, "rows": count, "accepted": detected_accepted.get(label, 0)}
                     for label, count in detected.most_common()],
        "examples_accepted": _examples(accepted, EXAMPLES_PER_LANGUAGE),
        "examples_rejected": _examples(rejected, EXAMPLES_PER_LANGUAGE),
        "lengths": lengths,
        "distinct_1": distinct_n(main_texts, 1, language.unspaced),
        "by_family": by_family,
    }
    return {"summary": summary, "details": details, "review": _review_records(code, registry, rejected)}


def _tier_summaries(rows: list[dict], registry: Registry) -> dict[str, dict]:
    out = {}
    for tier in TIERS:
        chosen = [r for r in rows if registry.get(r["language"]).tier == tier]
        if not chosen:
            continue
        generated = sum(r["generated"] for r in chosen)
        accepted = sum(r["accepted"] for r in chosen)
        out[tier] = {
            "languages": len(chosen),
            "generated": generated,
            "accepted": accepted,
            "acceptance_rate": round(accepted / generated, 4) if generated else 0.0,
            "mean_language_acceptance_rate": round(sum(r["acceptance_rate"] for r in chosen) / len(chosen), 4),
            "cost_usd": round(sum(r["cost_usd"] for r in chosen), 6),
        }
    return out


# -- plots -----------------------------------------------------------------------------------
def _png(figure) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(rows: list[dict], details: dict[str, dict], confusion: dict[str, dict[str, int]]) -> dict[str, str]:
    from matplotlib.figure import Figure

    plots = {}
    ordered = sorted(rows, key=lambda r: -r["acceptance_rate"])
    width = max(6.0, 0.28 * len(rows) + 2)
    fig = Figure(figsize=(width, 3.6))
    ax = fig.add_subplot()
    ax.bar([r["language"] for r in ordered], [100 * r["acceptance_rate"] for r in ordered], color="#3b7dd8")
    ax.set_ylabel("accepted (% of generated ok)")
    ax.set_ylim(0, 100)
    ax.set_title("Acceptance by language")
    ax.tick_params(axis="x", labelrotation=90, labelsize=8)
    plots["acceptance"] = _png(fig)

    reasons = sorted({r for d in details.values() for r in d["rejects_by_reason"]})
    fig = Figure(figsize=(width, 3.8))
    ax = fig.add_subplot()
    bottom = [0] * len(ordered)
    cmap = __import__("matplotlib").colormaps["tab20"]
    for index, reason in enumerate(reasons):
        values = [details[r["language"]]["rejects_by_reason"].get(reason, 0) for r in ordered]
        ax.bar([r["language"] for r in ordered], values, bottom=bottom, label=reason, color=cmap(index % 20))
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("rejected rows with reason")
    ax.set_title("Reject reasons (a row may have several)")
    ax.tick_params(axis="x", labelrotation=90, labelsize=8)
    if reasons:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    plots["reasons"] = _png(fig)

    expected = sorted(confusion)
    seen = sorted({s for row in confusion.values() for s in row})
    fig = Figure(figsize=(max(4.0, 0.3 * len(seen) + 2), max(3.0, 0.3 * len(expected) + 1.5)))
    ax = fig.add_subplot()
    if expected and seen:
        import math

        counts = [[confusion[e].get(s, 0) for s in seen] for e in expected]
        # log scale: the diagonal (correct) dwarfs the confusions otherwise
        image = ax.imshow([[math.log10(1 + c) for c in row] for row in counts], cmap="magma_r", aspect="auto")
        fig.colorbar(image, ax=ax, label="log10(1 + rows)")
        ax.set_xticks(range(len(seen)), seen, rotation=90, fontsize=7)
        ax.set_yticks(range(len(expected)), expected, fontsize=7)
        if len(seen) * len(expected) <= 400:
            for i, row in enumerate(counts):
                for j, count in enumerate(row):
                    if count:
                        dark = math.log10(1 + count) > 0.6 * math.log10(1 + max(map(max, counts)))
                        ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                                color="white" if dark else "black")
    else:
        ax.text(0.5, 0.5, "no LID verdicts", ha="center", va="center")
    ax.set_xlabel("language the LID ensemble saw (main field)")
    ax.set_ylabel("expected language")
    ax.set_title("LID confusion")
    plots["confusion"] = _png(fig)
    return plots


def _render_html(context: dict) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined)
    return env.get_template("audit.html.j2").render(**context)


def run_audit(run: Run, config: RunConfig, registry: Registry) -> StageResult:
    """Write ``audit/summary.parquet``, ``audit/audit.json`` and ``audit/index.html`` for ``run``,
    through the runner (skipped when current)."""
    return run_stage(run, AUDIT, config, registry)


def write_audit(inputs: StageInput) -> StageResult:
    """The audit stage's body (see the module docstring); it has no settings of its own."""
    run, registry = inputs.run, inputs.registry
    languages = run.table_languages("generated")
    if not languages:
        raise TableError("no generated tables", where=str(run.stage_dir("generated")),
                         fix="run 'workbench generate' (and 'workbench filter') first")
    for code in languages:
        registry.get(code)
    result = StageResult(STAGE)
    start = time.perf_counter()
    # Read everything first: a damaged input stops the audit before any output is written.
    stats = {}
    for code in languages:
        planned = run.read_table("plan", code, PLAN).height if run.has_table("plan", code) else None
        stats[code] = _language_stats(
            code, registry, planned,
            run.read_table("generated", code, GENERATED),
            run.read_table("accepted", code, FILTERED),
            run.read_table("rejected", code, FILTERED),
        )
    rows = [stats[c]["summary"] for c in languages]
    details = {c: stats[c]["details"] for c in languages}
    confusion = {c: dict(details[c]["lid_seen_as"]) for c in languages}
    tiers = _tier_summaries(rows, registry)
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
    html = _render_html({"run": run.root.name, "created_at": report["created_at"], "totals": totals,
                         "tiers": tiers, "rows": rows, "details": details,
                         "examples_per_language": EXAMPLES_PER_LANGUAGE, "example_chars": EXAMPLE_CHARS,
                         "plots": _plots(rows, details, confusion)})
    summary_path = run.write_table(STAGE, "summary", pl.DataFrame(rows, schema=AUDIT_SUMMARY), AUDIT_SUMMARY)
    atomic_write_bytes(run.stage_dir(STAGE) / "audit.json",
                       json.dumps(report, indent=1, ensure_ascii=False).encode())
    atomic_write_bytes(run.stage_dir(STAGE) / "index.html", html.encode())
    atomic_write_bytes(run.stage_dir(STAGE) / REVIEW_FILE, review)
    result.outputs = {str(summary_path.relative_to(run.root)): len(rows), "audit/audit.json": len(rows),
                      "audit/index.html": len(rows), f"audit/{REVIEW_FILE}": totals["rejected"]}
    result.stats = {"totals": totals, "seconds": round(time.perf_counter() - start, 3)}
    return result


AUDIT = Stage(STAGE, reads=("plan", "generate", "filter"), sections=(), body=write_audit,
              writes="audit/ (summary.parquet, audit.json, index.html)", languages=True)
