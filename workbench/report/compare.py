"""Compare mode: per-language deltas B - A between two systems' results (``workbench report --compare``),
and the compare page linked from a report.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from workbench import conditions
from workbench.errors import WorkbenchError
from workbench.languages import Registry, load_registry
from workbench.run import StageResult, atomic_write_bytes
from workbench.tables import REPORT_COMPARE, conform
from workbench.report import STAGE
from workbench.report.analysis import METRIC_LABELS, TIER_RANK
from workbench.report.inputs import load_results
from workbench.report.plots import compare_plot
from workbench.report.render import template_env, write_table


def _resolve_side(spec: str, registry: Registry) -> tuple[str, pl.DataFrame]:
    """``PATH[@SYSTEM]`` -> (label, that system's rows). PATH is a results table or a run directory."""
    path_text, system = spec, ""
    if not Path(spec).exists() and "@" in spec:
        # the first "@" after which the rest is the system (system names may hold "@": minilm@ft-contract)
        cuts = [i for i, ch in enumerate(spec) if ch == "@" and Path(spec[:i]).exists()]
        cut = cuts[0] if cuts else spec.rindex("@")
        path_text, system = spec[:cut], spec[cut + 1:]
    path = Path(path_text)
    if path.is_dir():
        path = path / "eval" / "results.parquet"
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
    return f"{system} ({path})", frame.filter(pl.col("system") == system)


def compare(a_spec: str, b_spec: str, registry: Registry) -> pl.DataFrame:
    """Per language, task and metric: the value of A, of B, and B - A. Raises on nothing in common."""
    label_a, a = _resolve_side(a_spec, registry)
    label_b, b = _resolve_side(b_spec, registry)
    # the same data only: the data conditions (benchmark, corpus, split, revision of the files) match too
    key = list(dict.fromkeys(["task", "dataset", "language", "split", "metric", *conditions.DATA_CONDITIONS]))
    joined = a.select(*key, pl.col("value").alias("value_a")).join(
        b.select(*key, pl.col("value").alias("value_b")), on=key, how="inner", nulls_equal=True)
    if joined.height == 0:
        def shape(df):
            return "; ".join(sorted({f"{r['task']}/{r['dataset']}/{r['metric']}" for r in df.iter_rows(named=True)}))[:300]
        raise WorkbenchError(
            f"mixed metrics: A and B share no (task, dataset, language, metric) on the same data (benchmark, corpus, split, "
            f"revision): A has {shape(a)}; B has {shape(b)}",
            where="--compare", fix="compare results of the same evaluation (same task, dataset and metric)")
    rows = []
    for rec in joined.sort("task", "metric", "language").iter_rows(named=True):
        fact = registry.get(rec["language"])
        rows.append({"language": rec["language"], "tier": fact.tier, "miracl_low_resource": fact.miracl_low_resource,
                     "task": rec["task"], "metric": rec["metric"], "label_a": label_a, "value_a": rec["value_a"],
                     "label_b": label_b, "value_b": rec["value_b"],
                     "delta": round(rec["value_b"] - rec["value_a"], 3)})
    return conform(pl.DataFrame(rows, schema=REPORT_COMPARE), REPORT_COMPARE, where="compare")


def run_compare(a_spec: str, b_spec: str, out_dir: Path | str, *, registry: Registry | None = None,
                title: str = "Run comparison") -> StageResult:
    """Write compare.html, compare.md and compare.parquet/.csv: per-language deltas B - A.

    ``a_spec``/``b_spec``: ``PATH[@SYSTEM]``, PATH an EVAL_RESULTS table or a run directory.
    """
    registry = registry or load_registry()
    table = compare(a_spec, b_spec, registry)
    sections = []
    for (task, metric), part in table.group_by(["task", "metric"], maintain_order=True):
        part = part.with_columns(pl.col("tier").replace_strict(TIER_RANK, return_dtype=pl.Int64).alias("_rank")).sort(
            "_rank", "language").drop("_rank")
        means = part.group_by("tier", maintain_order=True).agg(pl.col("delta").mean().round(3).alias("mean"), pl.len().alias("n"))
        sections.append({"task": task, "metric": METRIC_LABELS.get(metric, metric), "rows": part.to_dicts(),
                         "means": means.to_dicts(), "plot": compare_plot(part, task, metric)})
    context = {"title": title, "label_a": table["label_a"][0], "label_b": table["label_b"][0], "sections": sections,
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
