"""Filter stage: ``generated/<lang>.parquet`` -> ``accepted/<lang>.parquet`` + ``rejected/<lang>.parquet``.

Input: every ``generated/<lang>.parquet`` (GENERATED schema) in the run; rows with status ``ok``
are filtered, failed rows are left to the audit. Output: ``accepted/<lang>.parquet`` and
``rejected/<lang>.parquet`` (FILTERED schema: the generated columns + ``reasons`` (list of
reason codes, empty when accepted), ``lid_language``, ``lid_support``, ``lid_votes``,
``lid_accepted_as``). Every ok row lands in exactly one of the two tables.

Per row: rules per task family, script check and the LID ensemble (:mod:`.rules`), run in
``filter.workers`` processes over chunks of ``filter.chunk_size`` rows; then exact and near-duplicate
detection within the language on the main field and on the whole example (:mod:`.dedup`), among
rows that passed the other rules (first occurrence, by slot order, wins).

All input tables are read and checked before anything is written, so a corrupt or truncated
input gives one clear error and no partial output. The stage is skipped when its config and its
inputs are unchanged and its outputs are intact (the runner decides, :mod:`workbench.runner`).

Example::

    workbench filter runs/demo
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import polars as pl
import pyarrow as pa

from workbench import checks
from workbench.config import FilterSection, RunConfig
from workbench.errors import TableError
from workbench.families import EXAMPLE_FIELDS, FAMILIES
from workbench.filter.dedup import find_normalised_duplicates
from workbench.filter.lid import Ensemble
from workbench.filter.rules import Verdict, check_row, normalise_lines
from workbench.languages import Registry
from workbench.processes import init_pool_worker, terminate_children
from workbench.run import Folder, Run, StageResult
from workbench.runner import Stage, StageInput, run_stage
from workbench.tables import FILTERED, GENERATED, LID_VOTE

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

STAGE = "filter"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Checker:
    """What a process checks rows with: the languages, the ``[filter]`` settings and the loaded LID models."""

    registry: Registry
    section: FilterSection
    ensemble: Ensemble


# Worker-process state (set by _init_worker or inherited through fork).
_STATE: dict[str, _Checker] = {}


def _init_worker(registry: Registry, section: FilterSection) -> None:
    if multiprocessing.parent_process() is not None:  # a pool worker: never outlive the filter
        init_pool_worker()
    if "checker" not in _STATE:
        _STATE["checker"] = _Checker(registry, section, Ensemble.load(registry, section))


def _check_chunk(rows: list[dict]) -> list[Verdict]:
    checker = _STATE["checker"]
    return [check_row(row, checker.registry, checker.ensemble, checker.section) for row in rows]


def _whole_example(row: dict) -> tuple[str, ...] | None:
    parts = tuple(row.get(f) or "" for f in FAMILIES[row["family"]].fields)
    return parts if any(p and not p.isspace() for p in parts) else None  # some field is not blank


def _dedup_views(rows: list[dict], eligible: list[bool]) -> dict[str, list]:
    """What dedup compares, of rows that passed the rules: the main field, and the whole example (its
    fields, compared as one text joined by newlines)."""
    return {
        "query": [row.get(FAMILIES[row["family"]].main_field) if ok else None for row, ok in zip(rows, eligible)],
        "example": [_whole_example(row) if ok else None for row, ok in zip(rows, eligible)],
    }


def _dedup_task(views: dict[str, list], section: FilterSection) -> list[list[str]]:
    size = len(next(iter(views.values())))
    out: list[list[str]] = [[] for _ in range(size)]
    norms: dict[str, str] = {}  # every text normalised once: a main field is also part of its example
    for view, texts in views.items():
        if view == "example":
            normalised = [None if parts is None else normalise_lines(parts, norms) for parts in texts]
        else:
            normalised = [None if text is None else normalise_lines([text], norms) for text in texts]
        kinds = find_normalised_duplicates(
            normalised,
            exact=section.exact_dedup,
            near=section.near_dedup,
            threshold=section.near_threshold,
            num_perm=section.num_perm,
            shingle_chars=section.shingle_chars,
            sample=section.example_shingle_sample if view == "example" else 1,
        )
        for index, kind in enumerate(kinds):
            if kind:
                out[index].append(f"{kind}_duplicate:{view}")
    return out


def _dedup_reasons(rows: list[dict], eligible: list[bool], section: FilterSection) -> list[list[str]]:
    return _dedup_task(_dedup_views(rows, eligible), section)


def _filter_serial(rows: list[dict], registry: Registry, section: FilterSection,
                progress: Callable[[int], None] | None = None) -> list[tuple[list[str], Verdict]]:
    """Rules + language checks + dedup for one language's ok rows, in this process."""
    _init_worker(registry, section)
    verdicts: list[Verdict] = []
    for i in range(0, len(rows), section.chunk_size):
        verdicts.extend(_check_chunk(rows[i : i + section.chunk_size]))
        if progress:
            progress(min(section.chunk_size, len(rows) - i))
    dup = _dedup_reasons(rows, [not v.reasons for v in verdicts], section)
    return [(list(v.reasons) + d, v) for v, d in zip(verdicts, dup)]


def _filter_in_pool(pool: ProcessPoolExecutor, table_rows: dict[str, list[dict]], section: FilterSection,
                    progress: Callable[[int], None]):
    """Yield (code, results) per language; checks and dedup of all languages share the pool's cores."""
    size = section.chunk_size
    checks = {code: [pool.submit(_check_chunk, rows[i : i + size]) for i in range(0, len(rows), size)]
              for code, rows in table_rows.items()}
    verdicts: dict[str, list[Verdict]] = {}
    dedups = {}
    for code, futures in checks.items():
        verdicts[code] = []
        for future in futures:
            chunk = future.result()
            verdicts[code].extend(chunk)
            progress(len(chunk))
        eligible = [not v.reasons for v in verdicts[code]]
        dedups[code] = pool.submit(_dedup_task, _dedup_views(table_rows[code], eligible), section)
    for code, dedup in dedups.items():
        yield code, [(list(v.reasons) + d, v) for v, d in zip(verdicts[code], dedup.result())]


def _arrow(values: list, dtype: PolarsDataType) -> pa.Array:
    """A flat Arrow array made by polars (``pyarrow.array`` on a list imports pandas: ~0.3 CPU-s)."""
    return pl.Series(values, dtype=dtype).to_arrow()


def _lists(rows: list, dtype: PolarsDataType, flat: pa.Array | None = None) -> pl.Series:
    """A polars list column from one list per row, built as an Arrow list array over the flat values."""
    offsets = [0]
    for items in rows:
        offsets.append(offsets[-1] + len(items))
    if flat is None:
        flat = _arrow([item for items in rows for item in items], dtype)
    # an Arrow array comes back as a Series (from_arrow is typed for tables too)
    return cast(pl.Series, pl.from_arrow(pa.LargeListArray.from_arrays(_arrow(offsets, pl.Int64()), flat)))


def _frame(table: pl.DataFrame, indexes: list[int], results: list[tuple[list[str], Verdict]]) -> pl.DataFrame:
    """The rows ``indexes`` of ``table`` (a language's ok rows in slot order) with their verdicts, as
    FILTERED columns: the generated columns taken as they are, the verdict columns built column-wise
    (the list columns through Arrow) rather than a dict per row."""
    chosen = [results[i] for i in indexes]
    votes = [verdict.votes for _, verdict in chosen]  # (field, member, label, prob) per vote
    flat = [vote for row_votes in votes for vote in row_votes]
    struct = pa.StructArray.from_arrays(
        [_arrow([vote[k] for vote in flat], dtype) for k, dtype in enumerate(LID_VOTE.to_schema().values())],
        names=list(LID_VOTE.to_schema()))
    verdicts = pl.DataFrame({
        "reasons": _lists([reasons for reasons, _ in chosen], pl.Utf8()),
        "lid_language": pl.Series([verdict.lid_language for _, verdict in chosen], dtype=pl.Utf8()),
        "lid_support": pl.Series([verdict.lid_support for _, verdict in chosen], dtype=pl.Float64()),
        "lid_votes": _lists(votes, LID_VOTE, struct),
        "lid_accepted_as": pl.Series([None if reasons else verdict.lid_accepted_as for reasons, verdict in chosen],
                                     dtype=pl.Utf8()),
    })
    return pl.concat([table[indexes], verdicts], how="horizontal").select(list(FILTERED))


def run_filter(run: Run, config: RunConfig, registry: Registry,
               progress: Callable[[int, int], None] | None = None) -> StageResult:
    """Filter every ``generated/<lang>.parquet`` of ``run`` through the runner (skipped when current);
    ``progress(done, total)`` is optional."""
    return run_stage(run, FILTER, config, registry, progress=progress)


def outside_inputs(section: FilterSection) -> list[str]:
    """The LID model files the filter reads from outside the run (they join its digest)."""
    return [p for p in (section.lid176_path, section.extra_fasttext_path) if p]


def filter_generated(inputs: StageInput, section: FilterSection) -> StageResult:
    """The filter stage's body (see the module docstring)."""
    run, registry, progress = inputs.run, inputs.registry, inputs.progress
    languages = run.table_languages(Folder.GENERATED)
    if not languages:
        raise TableError("no generated tables to filter", where=str(run.stage_dir(Folder.GENERATED)),
                         fix="run 'workbench generate' first")
    for code in languages:
        registry.get(code)  # an unknown language file name fails here, before any work
    # Read and check every input first: a damaged table must not leave half the outputs behind.
    tables = {code: run.read_table(Folder.GENERATED, code, GENERATED) for code in languages}
    result = StageResult(STAGE)
    start = time.perf_counter()
    ok = {code: table.filter(pl.col("status") == "ok") for code, table in tables.items()}
    total = sum(t.height for t in ok.values())
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    _STATE.clear()
    _init_worker(registry, section)  # load the models once; forked workers inherit them
    workers = section.workers or os.cpu_count() or 1
    ordered = {code: ok[code].sort("slot_id") for code in languages}
    # the rules read these columns only: a dict of 4 + 9 entries a row, not of every generated column
    checked = ["slot_id", "language", "family", "target_language", *EXAMPLE_FIELDS]
    table_rows = {code: table.select(checked).to_dicts() for code, table in ordered.items()}
    stats: dict[str, dict[str, int]] = {}
    pool = None
    if workers > 1 and total > section.chunk_size:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_init_worker, initargs=(registry, section))
    try:
        if pool is not None:
            outcomes = _filter_in_pool(pool, table_rows, section, tick)
        else:
            outcomes = ((code, _filter_serial(table_rows[code], registry, section, tick)) for code in languages)
        for code, results in outcomes:
            rows = table_rows[code]
            keep = [i for i, (reasons, _) in enumerate(results) if not reasons]
            drop = [i for i, (reasons, _) in enumerate(results) if reasons]
            accepted = _frame(ordered[code], keep, results)
            rejected = _frame(ordered[code], drop, results)
            for folder, table in ((Folder.ACCEPTED, accepted), (Folder.REJECTED, rejected)):
                path = run.write_table(folder, code, table, FILTERED)
                result.outputs[run.relative(path)] = table.height
            stats[code] = {"generated_ok": len(rows), "accepted": len(keep), "rejected": len(drop)}
            log.info("filter %s: %d ok rows -> %d accepted, %d rejected", code, len(rows), len(keep), len(drop))
    except BaseException:
        if pool is not None:  # Ctrl-C / SIGTERM: stop the workers now rather than wait for their chunks
            terminate_children()
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    result.stats = {"languages": stats, "seconds": round(time.perf_counter() - start, 3)}
    return result


FILTER = Stage(STAGE, reads=("generate",), sections=(FilterSection,), body=filter_generated,
               writes=(Folder.ACCEPTED, Folder.REJECTED), languages=True,
               outside=outside_inputs, check=checks.filter)
