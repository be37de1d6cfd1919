"""The audit's numbers: per-language statistics of generation and filtering, per-tier summaries,
the examples index.html shows and the records of rejects_for_review.jsonl (no I/O here)."""

from __future__ import annotations

from collections import Counter

import polars as pl

from workbench.errors import TableError
from workbench.families import FAMILIES
from workbench.filter.script import words
from workbench.generate.budget import TRUNCATED
from workbench.languages import TIERS, Registry
from workbench.run import Folder

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


def language_stats(code: str, registry: Registry, planned: int | None, generated: pl.DataFrame,
                    accepted: pl.DataFrame, rejected: pl.DataFrame) -> dict:
    language = registry.get(code)
    ok = generated.filter(pl.col("status") == "ok")
    failed = generated.height - ok.height
    if accepted.height + rejected.height != ok.height:
        raise TableError(
            f"accepted ({accepted.height}) + rejected ({rejected.height}) != generated ok rows ({ok.height})",
            where=f"{Folder.ACCEPTED}/{code}.parquet",
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


def tier_summaries(rows: list[dict], registry: Registry) -> dict[str, dict]:
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
