"""Compare mode: per-language deltas B - A between two systems' results (``workbench report --compare``),
and the compare page linked from a report. Per tier, the mean B - A over its languages with the report's
two-level bootstrap interval (:func:`workbench.stats.tier_mean` on per-query paired differences), or
"cannot say" under the report's rule (:func:`workbench.report.tiers.too_few_languages`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

from workbench import conditions, stats
from workbench.errors import WorkbenchError
from workbench.languages import Registry, load_registry
from workbench.metrics import metric_label
from workbench.report import STAGE
from workbench.report import measured as measured_mod
from workbench.report.analysis import TIER_RANK
from workbench.report.inputs import load_results
from workbench.report.plots import compare_plot, shared_delta_limits
from workbench.report.render import delta_words, detail_words, template_env, write_table
from workbench.report.tiers import MIN_LANGUAGES, too_few_languages
from workbench.run import Folder, StageResult, atomic_write_bytes
from workbench.tables import REPORT_COMPARE, conform


def _resolve_side(spec: str, registry: Registry) -> tuple[str, str, Path, pl.DataFrame]:
    """``PATH[@SYSTEM]`` -> (label, system, results table, that system's rows). PATH is a results table or a
    run directory."""
    path_text, system = spec, ""
    if not Path(spec).exists() and "@" in spec:
        # the first "@" after which the rest is the system (system names may hold "@": minilm@ft-contract)
        cuts = [i for i, ch in enumerate(spec) if ch == "@" and Path(spec[:i]).exists()]
        cut = cuts[0] if cuts else spec.rindex("@")
        path_text, system = spec[:cut], spec[cut + 1:]
    path = Path(path_text)
    if path.is_dir():
        path = path / Folder.EVAL / "results.parquet"
    frame = load_results([path], registry)
    systems = frame["system"].unique(maintain_order=True).to_list()
    if system:
        if system not in systems:
            raise WorkbenchError(f"system '{system}' is not in this table", where=str(path),
                                 fix=f"choose one of {', '.join(systems)}")
    elif len(systems) == 1:
        system = systems[0]
    else:
        raise WorkbenchError(f"the table holds several systems ({', '.join(systems)})", where=str(path),
                             fix=f"name one as {path_text}@SYSTEM")
    return f"{system} ({path})", system, path, frame.filter(pl.col("system") == system)


_WHERE = ["task", "dataset", "language", "split", "metric"]


def _statistics(path_a: Path, system_a: str, path_b: Path, system_b: str, joined: pl.DataFrame
                ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Each side's 95% interval and the paired test of B against A, from the per-query scores beside each
    results table, by the procedures of the main report (:mod:`workbench.stats`, same seeds: the same pair of
    systems gets the same numbers here as in its report), and the per-query paired differences B - A
    (``score``). Sides with the same system name are told apart."""
    if system_a == system_b:
        system_a, system_b = f"{system_a} (A)", f"{system_b} (B)"
    sides = []
    for path, system, original in ((path_a, system_a, joined["system_a"][0]), (path_b, system_b, joined["system_b"][0])):
        scores = measured_mod.load_per_query([path]).filter(pl.col("system") == original)
        sides.append(scores.with_columns(pl.lit(system).alias("system")))
    per_query = pl.concat(sides).join(joined.select(_WHERE).unique(), on=_WHERE, how="semi")
    if per_query.height == 0:
        return pl.DataFrame(schema={**dict.fromkeys(_WHERE, pl.Utf8), "system": pl.Utf8}), \
            pl.DataFrame(schema=stats.COMPARISON_SCHEMA), pl.DataFrame(schema={**dict.fromkeys(_WHERE, pl.Utf8),
                                                                                "score": pl.Float64, "cluster": pl.Utf8})
    intervals = stats.intervals_table(per_query).with_columns(
        pl.when(pl.col("system") == system_a).then(pl.lit("a")).otherwise(pl.lit("b")).alias("side"))
    side_b = per_query.filter(pl.col("system") == system_b).select(*_WHERE, "query_id", pl.col("score").alias("b"))
    paired = per_query.filter(pl.col("system") == system_a).join(side_b, on=[*_WHERE, "query_id"], how="inner").select(
        *_WHERE, (pl.col("b") - pl.col("score")).alias("score"), "cluster")
    return intervals, stats.comparisons_table(per_query, [(system_a, system_b)]), paired


def compare(a_spec: str, b_spec: str, registry: Registry) -> pl.DataFrame:
    """Per language, task and metric: the value of A and of B with their 95% intervals, and B - A with the
    interval and Holm-corrected paired test of the main report (null where a side has no per-query scores).
    Raises on nothing in common."""
    return _compare(a_spec, b_spec, registry)[0]


def _compare(a_spec: str, b_spec: str, registry: Registry) -> tuple[pl.DataFrame, pl.DataFrame, tuple[str, str]]:
    """REPORT_COMPARE (:func:`compare`), the per-query paired differences B - A behind it, and the two systems."""
    label_a, system_a, path_a, a = _resolve_side(a_spec, registry)
    label_b, system_b, path_b, b = _resolve_side(b_spec, registry)
    # the same data only: the data conditions (benchmark, corpus, split, revision of the files) match too
    key = list(dict.fromkeys([*_WHERE, *conditions.DATA_CONDITIONS]))
    joined = a.select(*key, "n_docs", pl.col("system").alias("system_a"), pl.col("value").alias("value_a")).join(
        b.select(*key, pl.col("system").alias("system_b"), pl.col("value").alias("value_b")), on=key, how="inner",
        nulls_equal=True)
    if joined.height == 0:
        def shape(df):
            return "; ".join(sorted({f"{r['task']}/{r['dataset']}/{r['metric']}" for r in df.iter_rows(named=True)}))[:300]
        raise WorkbenchError(
            f"mixed metrics: A and B share no (task, dataset, language, metric) on the same data (benchmark, corpus, split, "
            f"revision): A has {shape(a)}; B has {shape(b)}",
            where="--compare", fix="compare results of the same evaluation (same task, dataset and metric)")
    intervals, tests, paired_scores = _statistics(path_a, system_a, path_b, system_b, joined)
    value_ci = {(r["side"], *(r[k] for k in _WHERE)): r for r in intervals.iter_rows(named=True)}
    paired = {tuple(r[k] for k in _WHERE): r for r in tests.iter_rows(named=True)}
    rows = []
    for rec in joined.sort("task", "metric", "language").iter_rows(named=True):
        fact = registry.get(rec["language"])
        where = tuple(rec[k] for k in _WHERE)
        row = {"language": rec["language"], "tier": fact.tier, "miracl_low_resource": fact.miracl_low_resource,
               "task": rec["task"], "dataset": rec["dataset"], "metric": rec["metric"], "n_docs": rec["n_docs"],
               "label_a": label_a, "value_a": rec["value_a"], "label_b": label_b, "value_b": rec["value_b"],
               "delta": round(rec["value_b"] - rec["value_a"], 3)}
        for side in ("a", "b"):
            got = value_ci.get((side, *where))
            # an interval belongs to the number shown only where the per-query scores average to it
            if got is not None and abs(got["mean"] - row[f"value_{side}"]) <= measured_mod.MEAN_TOLERANCE:
                row |= {f"ci_low_{side}": got["ci_low"], f"ci_high_{side}": got["ci_high"]}
        test = paired.get(where)
        if test is not None and "ci_low_a" in row and "ci_low_b" in row:
            row |= {"delta_ci_low": test["ci_low"], "delta_ci_high": test["ci_high"], "confidence": test["confidence"],
                    "method": test["method"], "n": test["n"], "n_clusters": test["n_clusters"], "p_holm": test["p_holm"],
                    "holm_family_size": test["holm_family_size"], "significant": test["significant"], "mdd": test["mdd"]}
        rows.append(row)
    return conform(pl.DataFrame(rows, schema=REPORT_COMPARE), REPORT_COMPARE, where="compare"), paired_scores, \
        (system_a, system_b)


def tier_means(part: pl.DataFrame, paired: pl.DataFrame, systems: tuple[str, str]) -> list[dict]:
    """Per tier of one section (one task and metric of REPORT_COMPARE), in tier order: the mean B - A over its
    languages with a 95% two-level bootstrap interval (languages resampled within the tier, then queries or
    clusters within each language; :func:`workbench.stats.tier_mean`), on the languages with a paired test
    (one dataset per language: the one with most paired queries); ``why`` instead where the tier holds too
    few of them (the report's rule). ``descriptive``: the plain mean of the rows' B - A, ``n`` rows."""
    out = []
    for (tier,), rows in part.group_by(["tier"], maintain_order=True):
        tested = rows.filter(pl.col("delta_ci_low").is_not_null()).sort("n", descending=True).unique(
            "language", keep="first", maintain_order=True)
        by_language = {}
        for rec in tested.iter_rows(named=True):
            diffs = paired.filter(*[pl.col(k) == rec[k] for k in ("task", "dataset", "language", "metric")])
            clusters = diffs["cluster"]
            by_language[rec["language"]] = (diffs["score"].to_numpy(),
                                            clusters.to_numpy() if clusters.null_count() == 0 else None)
        got = {"tier": tier, "descriptive": round(rows["delta"].mean(), 3), "n": rows.height,
               "languages": sorted(by_language), "mean": None, "ci_low": None, "ci_high": None,
               "why": too_few_languages({tier: list(by_language)}, what="with per-query scores on both sides")}
        if not got["why"]:
            rec = rows.row(0, named=True)
            mean = stats.tier_mean(by_language, rng=np.random.default_rng(
                stats._seed(*systems, rec["task"], rec["metric"], tier)))
            got |= {"mean": mean.mean, "ci_low": mean.low, "ci_high": mean.high}
        out.append(got)
    return out


def _section_rows(part: pl.DataFrame) -> list[dict]:
    """Rows of one compare section with the words of the main report's difference cells."""
    rows = []
    for r in part.iter_rows(named=True):
        d = {"delta": r["delta"], "ci_low": r["delta_ci_low"], "ci_high": r["delta_ci_high"],
             "significant": r["significant"], "p_holm": r["p_holm"], "confidence": r["confidence"],
             "holm_family_size": r["holm_family_size"], "n": r["n"], "n_clusters": r["n_clusters"], "mdd": r["mdd"]}
        words = delta_words(d) + ("" if r["delta_ci_low"] is not None else " (no per-query scores: untested)")
        rows.append({**r, "words": words, "detail": detail_words(d),
                     "mark": "flat" if not r["significant"] else ("up" if r["delta"] > 0 else "down")})
    return rows


def run_compare(a_spec: str, b_spec: str, out_dir: Path | str, *, registry: Registry | None = None,
                title: str = "Run comparison") -> StageResult:
    """Write compare.html, compare.md and compare.parquet/.csv: per-language B - A with intervals and tests.

    ``a_spec``/``b_spec``: ``PATH[@SYSTEM]``, PATH an EVAL_RESULTS table or a run directory.
    Sections per task and metric, the task's primary metric first and open; a metric that cannot
    discriminate on any of its datasets is folded with the reason; every chart has the same y scale.
    """
    registry = registry or load_registry()
    table, paired, systems = _compare(a_spec, b_spec, registry)
    sections = []
    for (task, metric), part in table.group_by(["task", "metric"], maintain_order=True):
        part = part.with_columns(pl.col("tier").replace_strict(TIER_RANK, return_dtype=pl.Int64).alias("_rank")).sort(
            "_rank", "language").drop("_rank")
        means = tier_means(part, paired, systems)
        reasons = [measured_mod.cannot_discriminate(metric, [r["value_a"], r["value_b"]], r["n_docs"])
                   for r in part.iter_rows(named=True)]
        ceiling = None
        if all(reasons):
            ceiling = (f"{metric_label(metric)} cannot tell A and B apart on any dataset here: "
                       + "; ".join(sorted(set(reasons))) + ".")
        sections.append({"task": task, "metric_key": metric, "metric": metric_label(metric), "rows": _section_rows(part),
                         "means": means, "ceiling": ceiling, "part": part,
                         "id": f"{task}-{metric}".replace(" ", "_").replace(".", "_")})
    primary = set(conditions.PRIMARY_METRIC.values())
    sections.sort(key=lambda sec: (sec["task"], sec["metric_key"] not in primary))
    first_of_task: set[str] = set()
    for sec in sections:
        sec["open"] = sec["task"] not in first_of_task and not sec["ceiling"]
        first_of_task.add(sec["task"])
    limits = shared_delta_limits(table)
    for sec in sections:
        sec["plot"] = compare_plot(sec.pop("part"), sec["task"], sec["metric_key"], limits)
    has_ci = table["delta_ci_low"].null_count() < table.height
    context = {"title": title, "label_a": table["label_a"][0], "label_b": table["label_b"][0], "sections": sections,
               "has_ci": has_ci, "min_languages": MIN_LANGUAGES,
               "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    env = template_env()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs = write_table(out, "compare", table, REPORT_COMPARE)
    atomic_write_bytes(out / "compare.md", env.get_template("compare.md.j2").render(**context).encode("utf-8"))
    atomic_write_bytes(out / "compare.html", env.get_template("compare.html.j2").render(**context).encode("utf-8"))
    outputs |= {"compare.md": 1, "compare.html": 1}
    return StageResult(STAGE, outputs=outputs, stats={"rows": table.height, "out_dir": str(out)})


def compare_view(results: pl.DataFrame, measured, focus: str, out: Path, registry: Registry) -> str | None:
    """compare/compare.html beside the report: the focus system against its base under the focus system's
    contract when that was measured (what the training data did), else the model measured before it."""
    data = [b if a == focus else a for a, b in measured.shown_pairs(focus)
            if focus in (a, b) and measured.comparisons.filter(
                (pl.col("system_a") == a) & (pl.col("system_b") == b))["cause"][0] == "training data"]
    models = [s for s in measured.systems if not measured.facts[s].lexical]
    if focus not in models or len(models) < 2:
        return None
    base = data[0] if data else (models[models.index(focus) - 1] if models.index(focus) else models[1])
    files = {s: results.filter(pl.col("system") == s)["input_file"][0] for s in (base, focus)}
    a = results.filter((pl.col("system") == base) & (pl.col("source") == "measured"))
    b = results.filter((pl.col("system") == focus) & (pl.col("source") == "measured"))
    key = ["task", "dataset", "language", "split", "metric"]
    if a.join(b, on=key, how="inner").height == 0:
        return None  # nothing in common: no compare page to link
    run_compare(f"{files[base]}@{base}", f"{files[focus]}@{focus}", out / "compare",
                registry=registry, title=f"{focus} against {base}")
    return "compare/compare.html"
