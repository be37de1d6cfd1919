"""Report inputs: EVAL_RESULTS tables and the audit summary, read and checked; what each system is.

Every error names the file and the fix (a WorkbenchError); nothing is read past the first bad table.
A results table without the condition columns (written by an eval before they existed) is refused
with one line: the report compares numbers only by those columns and never guesses them from a
dataset label, so the fix is to re-run eval on that run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from workbench import conditions
from workbench.errors import TableError, UnknownLanguageError, WorkbenchError
from workbench.eval.targets import EVAL_TASKS
from workbench.languages import Registry
from workbench.metrics import is_metric_name
from workbench.run import read_parquet, read_parquet_unchecked
from workbench.tables import AUDIT_SUMMARY, EVAL_CELL_KEY, EVAL_CONDITION_COLUMNS, EVAL_RESULTS


def load_results(paths: Sequence[Path | str], registry: Registry) -> pl.DataFrame:
    """Read and check EVAL_RESULTS tables; adds ``input_file``. Errors name the file and the fix."""
    if not paths:
        raise WorkbenchError(
            "no results tables given",
            where="report inputs",
            fix="pass --results PATH (an eval/results.parquet) or a run directory that has eval/results.parquet",
        )
    miracl = {lang.code for lang in registry.miracl}
    frames: list[pl.DataFrame] = []
    for raw in paths:
        path = Path(raw)
        missing = [c for c in EVAL_CONDITION_COLUMNS if c not in read_parquet_unchecked(path).columns]
        if missing:
            raise TableError(
                f"results table without condition columns ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): "
                "written by an older eval",
                where=str(path),
                fix="re-run eval on its run (workbench eval RUN ..., or workbench run CONFIG); the report compares "
                    "numbers only by these columns",
            )
        df = read_parquet(path, EVAL_RESULTS)
        if df.height == 0:
            raise TableError("results table is empty (0 rows)", where=str(path),
                             fix="run 'workbench eval' first, or leave this table out")
        nulls = [c for c in ("system", "task", "language", "metric", "value") if df[c].null_count()]
        if nulls:
            raise TableError(f"null values in column(s) {', '.join(nulls)}", where=str(path),
                             fix="every result row needs a system, task, language, metric and value")
        for code in df["language"].unique().sort().to_list():
            if code not in registry:
                raise UnknownLanguageError(
                    f"unknown language code '{code}' in column 'language'",
                    where=str(path),
                    fix="use a code from 'workbench languages' (e.g. yo, sw, zh)",
                )
        for column, allowed in (("benchmark", EVAL_TASKS), ("task_kind", conditions.TASK_KINDS),
                                ("corpus", conditions.CORPORA), ("regime", conditions.REGIMES)):
            bad = df.filter(~pl.col(column).is_in(list(allowed)) | pl.col(column).is_null())
            if bad.height:
                raise TableError(f"'{bad[column][0]}' is not a {column.replace('_', ' ')} the report knows",
                                 where=f"{path}: column '{column}'", fix=f"use one of {', '.join(allowed)}")
        bad_miracl = df.filter((pl.col("benchmark") == "miracl") & ~pl.col("language").is_in(list(miracl)))
        if bad_miracl.height:
            code = bad_miracl["language"][0]
            raise UnknownLanguageError(
                f"'{code}' is not a MIRACL language but has {bad_miracl['task'][0]} results",
                where=f"{path}: column 'language'",
                fix=f"MIRACL languages are {', '.join(sorted(miracl))}",
            )
        for metric in df["metric"].unique().sort().to_list():
            if not is_metric_name(metric):
                raise WorkbenchError(
                    f"mixed metrics: '{metric}' is not a metric name the report knows",
                    where=f"{path}: column 'metric'",
                    fix="use mteb's names, e.g. ndcg_at_10, recall_at_100 (retrieval) or f1, accuracy (bitext mining)",
                )
            values = df.filter(pl.col("metric") == metric)["value"]
            if values.min() < 0 or values.max() > 100:
                raise WorkbenchError(
                    f"mixed metrics: {metric} values range {values.min():g}..{values.max():g}, outside 0-100",
                    where=f"{path}: column 'value'", fix="EVAL_RESULTS values are percentages",
                )
            if _looks_fractional(values):
                raise WorkbenchError(
                    f"mixed metrics: every {metric} value is <= 1 ({values.max():g} at most): these look like "
                    "0-1 fractions, but EVAL_RESULTS holds percentages",
                    where=f"{path}: column 'value'", fix="multiply the values by 100",
                )
        frames.append(df.with_columns(pl.lit(str(path)).alias("input_file")))
    results = pl.concat(frames, how="vertical")
    key = ["system", "task", "dataset", "language", "split", "metric", *EVAL_CELL_KEY]  # cells: the passkey probe's
    clash = results.group_by(key).agg(pl.col("value").n_unique().alias("n"), pl.col("input_file").unique()).filter(pl.col("n") > 1)
    if clash.height:
        rec = clash.row(0, named=True)
        raise WorkbenchError(
            f"conflicting values for system '{rec['system']}', {rec['task']} {rec['language']} {rec['metric']}",
            where=", ".join(sorted(rec["input_file"])),
            fix="give each run's results a distinct system name, or leave one table out",
        )
    models = results.group_by("system").agg(pl.col("model").n_unique().alias("n"), pl.col("model").unique()).filter(pl.col("n") > 1)
    if models.height:
        rec = models.row(0, named=True)
        raise WorkbenchError(
            f"system '{rec['system']}' names different models ({', '.join(sorted(map(str, rec['model'])))})",
            where="report inputs: column 'system'",
            fix="give each model its own system name when evaluating",
        )
    return results.unique(key, keep="first", maintain_order=True)


@dataclass(frozen=True)
class SystemFacts:
    """What one system of the results is, read from its columns (never from its name)."""

    name: str
    model: str
    lexical: bool  # BM25: no vectors, no instruction, no max_length
    contract_from: str | None  # the model folder whose contract its weights ran under
    seed_group: str
    training_seed: int | None

    @property
    def replica(self) -> bool:
        """A further training seed of another system (its numbers feed that system's seed spread)."""
        return self.seed_group != self.name

    @property
    def trained_here(self) -> bool:
        return self.training_seed is not None


def system_facts(results: pl.DataFrame) -> dict[str, SystemFacts]:
    """Per system, in input order, from its rows' columns."""
    facts = {}
    for rec in results.unique("system", keep="first", maintain_order=True).iter_rows(named=True):
        rows = results.filter(pl.col("system") == rec["system"])
        facts[rec["system"]] = SystemFacts(
            name=rec["system"], model=str(rec["model"]), lexical=bool((rows["regime"] == conditions.LEXICAL).all()),
            contract_from=rec["contract_from"], seed_group=rec["seed_group"] or rec["system"],
            training_seed=rec["training_seed"])
    return facts


def _looks_fractional(values: pl.Series) -> bool:
    """Every value of a metric <= 1 (and not all zero) over two or more rows: a 0-1 scale table.

    A percent table can hold one value below 1 (an English-only model on Russian scores 0.4%),
    but not a whole column of them.
    """
    return values.len() >= 2 and 0 < values.max() <= 1.0


def load_audit(path: Path | str | None, registry: Registry) -> pl.DataFrame | None:
    if path is None:
        return None
    path = Path(path)
    df = read_parquet(path, AUDIT_SUMMARY)
    if df.height == 0:
        raise TableError("audit summary is empty (0 rows)", where=str(path),
                         fix="run 'workbench audit' after the filter stage, or leave --audit out")
    for code in df["language"].to_list():
        if code not in registry:
            raise UnknownLanguageError(f"unknown language code '{code}' in column 'language'", where=str(path),
                                       fix="use a code from 'workbench languages'")
    if df["language"].n_unique() != df.height:
        dup = df.group_by("language").len().filter(pl.col("len") > 1)["language"][0]
        raise TableError(f"language '{dup}' appears more than once", where=f"{path}: column 'language'")
    return df
