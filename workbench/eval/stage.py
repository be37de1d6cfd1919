"""The eval stage: mteb retrieval and Tatoeba bitext mining (hub or local files) for a model and/or
BM25 -> ``eval/results.parquet`` and ``eval/per_query.parquet``.

Writes into the run directory:

* ``eval/results.parquet`` (EVAL_RESULTS): one row per (system, task, dataset, language, split,
  metric), values in percent; rows of earlier evals with other keys are kept (upsert);
* ``eval/per_query.parquet`` (EVAL_PER_QUERY): the per-query (per sentence pair) scores behind each
  aggregate (see :mod:`workbench.eval.per_query`), upserted the same way;
* ``eval/data_sources.json``: per dataset label, where its data came from (hub dataset and
  revision, or local folder with each file's sha256) and the corpus variant, so a report can tell
  which data a number was measured on (e.g. warn when training data came from the same files);
* ``eval/mteb/``: mteb's own result JSON files (``results/<model>/<revision>/<Task>.json``);
* ``eval/predictions/<system>/<Task>_predictions.json``: mteb's ranked predictions, and
  ``eval/runs/<system>/<Task>-<lang>-<split>.trec``: the same as TREC run files (top 100);
* ``eval/query_counts.json``: per dataset, queries in the topics, left out by mteb for having no
  qrels, and kept although no judged passage is relevant (these score 0, as in mteb);
* ``eval/embeddings/``: the embedding cache (see :mod:`workbench.eval.cache`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import polars as pl

from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.languages import Registry
from workbench.eval import sharded
from workbench.eval.targets import Target, build_target
from workbench.progress import EvalWatch
from workbench.train.card import refresh_model_cards
from workbench.run import Run, StageResult, atomic_write_bytes, now
from workbench.runner import run_stage
from workbench.stages import StageInput
from workbench.tables import EVAL_CELL_KEY, EVAL_PER_QUERY, EVAL_RESULTS

log = logging.getLogger(__name__)
STAGE = "eval"

METRICS = ("ndcg_at_10", "recall_at_100", "recall_at_10", "mrr_at_10", "ndcg_at_100")
BITEXT_METRICS = ("f1", "accuracy", "precision", "recall")
# the cell columns (passkey length, depth, RoPE overrides) are null for every other task
RESULT_KEY = ("system", "model", "task", "dataset", "language", "split", "metric", *EVAL_CELL_KEY)
RUN_DEPTH = 100


ONE_SECTION = "[eval]"  # run_eval's systems: [eval]'s model (and BM25 when [eval] bm25) on [eval]'s task
PIPELINE_SYSTEMS = "[pipeline]"  # the pipeline's: every [pipeline] eval_systems entry on [eval] and each eval_also target


def run_eval(run: Run, config: RunConfig, registry: Registry, *, systems: str = ONE_SECTION,
             progress=None) -> StageResult:
    """Evaluate through the runner and upsert ``eval/results.parquet``: by default ``config.eval.model``
    (and BM25 when asked) on ``[eval]``'s task; ``systems=PIPELINE_SYSTEMS`` is what ``workbench run``
    evaluates (see :func:`eval_sections`). ``progress`` gets a :class:`~workbench.progress.EvalProgress`
    as systems start and texts are embedded (the CLI's view)."""
    return run_stage(run, STAGE, config, registry, options={"systems": systems}, progress=progress)


def outside_inputs(config: Any) -> list[str]:
    """The data folders and model folders eval reads from outside the run (they join its digest)."""
    paths = [t.data_dir for t in (config.eval, *config.pipeline.eval_also) if t.data_dir]
    return paths + [m for m in (config.eval.model, config.train.model) if m and m not in ("minilm", "bm25")]


def eval_sections(run: Run, config: Any, systems: str) -> list[Any]:
    """One ``[eval]`` section per (target, system) this call evaluates.

    ``PIPELINE_SYSTEMS``: ``[eval]`` and every ``[[pipeline.eval_also]]`` target, each with every system
    of ``[pipeline] eval_systems``: ``bm25``, ``base`` (``[train] model`` before training) and
    ``trained`` (this run's ``train/model``). BM25 ranks passages and has no vectors to mine bitext
    with, so it is left out of Tatoeba targets.
    """
    if systems == ONE_SECTION:
        return [config.eval]
    if systems != PIPELINE_SYSTEMS:
        raise ValueError(f"unknown eval systems {systems!r}")
    base = config.train.model or "minilm"
    base_name = "minilm" if base == "minilm" else Path(base).name
    named = {"bm25": ("bm25", "bm25"), "base": (base_name, base),
             "trained": (f"{base_name}-ft", str(run.stage_dir("train") / "model"))}
    sections = []
    for target in [{}, *(t.model_dump() for t in config.pipeline.eval_also)]:
        only = target.pop("systems", None)  # an eval_also target may name a subset of eval_systems
        for key in [k for k in config.pipeline.eval_systems if only is None or k in only]:
            system, model = named[key]
            if model == "bm25" and target.get("task", config.eval.task) in ("tatoeba", "passkey"):
                continue
            sections.append(config.eval.model_copy(update={**target, "model": model, "system": system, "bm25": False}))
    return sections


def evaluate(inputs: StageInput) -> StageResult:
    """The eval stage's body: every section of :func:`eval_sections`, then one upsert of the tables."""
    run, registry = inputs.run, inputs.registry
    rows: list[dict[str, Any]] = []
    per_query: list[dict[str, Any]] = []
    query_counts: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    system_names: list[str] = []
    sections = eval_sections(run, inputs.config, inputs.options.get("systems", PIPELINE_SYSTEMS))
    watch = EvalWatch(inputs.progress, len(sections))  # the CLI's view: task, system, texts/s, ETA
    for index, section in enumerate(sections, 1):
        target = build_target(section, registry)
        # under torchrun every rank encodes its shards of the corpus (workbench/eval/sharded.py)
        systems = sharded.distribute(_build_systems(section, run), section, target, run)
        section_rows = []
        for system, model_label, model in systems:
            if target.kind == "bitext" and system_is_bm25(model):
                log.warning("bm25 cannot mine bitext (it ranks passages, it has no sentence vectors): skipped on %s", target.task_name)
                continue
            if target.kind == "passkey" and system_is_bm25(model):
                log.warning("bm25 has no passkey probe (it ranks by shared words, not by a read context): skipped")
                continue
            log.info("eval %s on %s (%s)", system, target.task_name, ", ".join(target.datasets))
            watch.start(index, target, system, model)
            aggregate, scores = _evaluate(run, target, system, model_label, model)
            section_rows.extend(aggregate)
            per_query.extend(scores)
            system_names.append(system)
        if not section_rows:
            raise WorkbenchError(f"no system can run {target.task_name}", where="--model",
                                 fix="evaluate an embedding model (not bm25)")
        rows.extend(section_rows)
        query_counts.update({target.datasets[s]: c for s, c in target.counts.items()})
        sources.update(target.sources)
    table = _upsert(run, rows)
    per_query_table = _upsert_per_query(run, per_query)
    for name, update in (("query_counts.json", query_counts), ("data_sources.json", sources)):
        path = run.stage_dir("eval") / name
        previous = json.loads(path.read_text()) if path.is_file() else {}
        previous.update(update)
        atomic_write_bytes(path, json.dumps(previous, indent=2, sort_keys=True, ensure_ascii=False).encode())
    refresh_model_cards(run)  # the model card of this run's trained model: its Evaluation section, now
    outputs = {"eval/results.parquet": table.height, "eval/per_query.parquet": per_query_table.height}
    return StageResult(STAGE, outputs=outputs,
                       stats={"query_counts": query_counts, "systems": list(dict.fromkeys(system_names))})


def eval_rows(run: Run, result: StageResult) -> list[dict[str, Any]]:
    """The ``eval/results.parquet`` rows of the systems and datasets ``result`` evaluated (also when
    the stage was current and nothing ran)."""
    table = run.read_table("eval", "results", EVAL_RESULTS)
    return table.filter(pl.col("system").is_in(result.stats.get("systems", []))
                        & pl.col("dataset").is_in(list(result.stats.get("query_counts", {})))).to_dicts()


def system_is_bm25(model: Any) -> bool:
    from workbench.eval.bm25 import BM25Search

    return isinstance(model, BM25Search)


# -- systems -------------------------------------------------------------------------------------
def _build_systems(section: Any, run: Run) -> list[tuple[str, str, Any]]:
    """(system name, model label, mteb model) for the model and, when asked, BM25."""
    from workbench.eval.bm25 import BM25Search

    systems: list[tuple[str, str, Any]] = []
    if section.model == "bm25":
        systems.append((section.system or "bm25", "bm25s", BM25Search()))
        return systems
    from workbench.encoder import minilm_path
    from workbench.eval.encoders import WorkbenchEncoder
    from workbench.eval.passkey import encoder_overrides

    if section.model == "minilm":
        path, default_name = minilm_path(), "minilm"
    else:
        path = Path(section.model).expanduser()
        default_name = path.name
    name = section.system or default_name
    encoder = WorkbenchEncoder(
        path,
        cache_root=run.stage_dir("eval") / "embeddings",
        pooling=section.pooling,
        batch_size=section.batch_size,
        device=section.device,
        name=name,
        **encoder_overrides(section),
    )
    systems.append((name, section.model if section.model == "minilm" else str(path), encoder))
    if section.bm25:
        systems.append(("bm25", "bm25s", BM25Search()))
    return systems


# -- evaluation ----------------------------------------------------------------------------------
def _evaluate(run: Run, target: Target, system: str, model_label: str, model: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """mteb on one system: (aggregate rows for results.parquet, per-query rows for per_query.parquet)."""
    import mteb
    from mteb.cache import ResultCache

    from workbench.eval.per_query import bitext_scores, retrieval_scores

    if target.kind == "passkey":  # a direct top-1 computation over its own documents (workbench/eval/passkey.py)
        return target.task.evaluate(run, system, model_label, model)
    eval_dir = run.stage_dir("eval")
    predictions = run.inside(eval_dir / "predictions" / system)  # the system name becomes a folder
    predictions_file = predictions / f"{target.task_name}_predictions.json"
    result = mteb.evaluate(
        model,
        target.task,
        cache=ResultCache(eval_dir / "mteb"),
        prediction_folder=predictions,
        overwrite_strategy="always",
        show_progress_bar=False,
    )
    if not predictions_file.is_file():
        raise WorkbenchError("mteb wrote no predictions file", where=str(predictions_file))
    ranked = json.loads(predictions_file.read_text(encoding="utf-8"))
    if target.kind == "retrieval":
        _write_trec_runs(ranked, run.inside(eval_dir / "runs" / system), target)
    created = now()
    metrics = BITEXT_METRICS if target.kind == "bitext" else METRICS
    rows, per_query = [], []
    for task_result in result.task_results:
        for split, scores in task_result.scores.items():
            for score in scores:
                subset = score["hf_subset"]
                counts = target.counts.get(subset, {})
                n_queries = counts.get("queries_total", 0) - counts.get("queries_without_qrels", 0)
                key = {
                    "system": system,
                    "model": model_label,
                    "task": target.task_name,
                    "dataset": target.datasets.get(subset, subset),
                    "language": target.languages.get(subset, subset),
                    "split": split,
                }
                for metric in metrics:
                    rows.append(
                        {
                            **key,
                            "metric": metric,
                            "value": round(float(score[metric]) * 100, 3),
                            "n_queries": n_queries,
                            "n_docs": counts.get("docs", 0),
                            "source": "measured",
                            "created_at": created,
                        }
                    )
                ranking = ranked.get(subset, {}).get(split)
                if ranking is None:
                    raise WorkbenchError(f"mteb saved no predictions for {subset}/{split}", where=str(predictions_file))
                if target.kind == "bitext":
                    per_metric = {"accuracy": bitext_scores(ranking["sentence1-sentence2"])}
                else:
                    per_metric = retrieval_scores(ranking, target.qrels[subset], METRICS)
                for metric, by_query in per_metric.items():
                    per_query.extend({**key, "metric": metric, "query_id": q, "score": v * 100} for q, v in by_query.items())
                    mean = 100 * sum(by_query.values()) / max(len(by_query), 1)
                    if abs(mean - 100 * float(score[metric])) > 1e-2:  # would be a bug: the table must add up
                        log.warning("%s %s %s %s: per-query mean %.3f differs from mteb's %.3f",
                                    system, key["dataset"], split, metric, mean, 100 * float(score[metric]))
    return rows, per_query


def _write_trec_runs(data: dict[str, Any], folder: Path, target: Target) -> None:
    """mteb's predictions (parsed JSON) -> one TREC run file per language (top RUN_DEPTH per query)."""
    for subset, splits in data.items():
        if subset == "mteb_model_meta":
            continue
        for split, ranking in splits.items():
            lines = []
            for qid, docs in ranking.items():
                ordered = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:RUN_DEPTH]
                lines.extend(f"{qid} Q0 {doc} {rank} {score:.6f} {target.task_name}" for rank, (doc, score) in enumerate(ordered, 1))
            atomic_write_bytes(folder / f"{target.task_name}-{subset}-{split}.trec", ("\n".join(lines) + "\n").encode())


def _upsert(run: Run, rows: list[dict[str, Any]]) -> pl.DataFrame:
    new = pl.DataFrame(rows, schema=EVAL_RESULTS)
    if run.has_table("eval", "results"):
        old = run.read_table("eval", "results", EVAL_RESULTS)
        new = pl.concat([old.join(new.select(RESULT_KEY), on=list(RESULT_KEY), how="anti", nulls_equal=True), new])
    new = new.sort(["task", "dataset", "system", "metric"])
    run.write_table("eval", "results", new, EVAL_RESULTS)
    return new


def _upsert_per_query(run: Run, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Replace every (system, model, task, dataset, language, split, metric) group measured now."""
    new = pl.DataFrame(rows, schema=EVAL_PER_QUERY)
    if run.has_table("eval", "per_query"):
        old = run.read_table("eval", "per_query", EVAL_PER_QUERY)
        new = pl.concat([old.join(new.select(RESULT_KEY).unique(), on=list(RESULT_KEY), how="anti", nulls_equal=True), new])
    new = new.sort(["task", "dataset", "system", "metric", "query_id"])
    run.write_table("eval", "per_query", new, EVAL_PER_QUERY)
    return new
