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

from workbench import checks, conditions
from workbench.config import EvalSection, PipelineSection, RunConfig, TrainSection
from workbench.errors import WorkbenchError
from workbench.eval import sharded
from workbench.eval.targets import Target, build_target
from workbench.languages import Registry
from workbench.metrics import ACCURACY, BITEXT_METRICS, RETRIEVAL_METRICS
from workbench.progress import EvalWatch
from workbench.run import Folder, Run, StageResult, atomic_write_bytes, now
from workbench.runner import Stage, StageInput, run_stage
from workbench.systems import BASE, BASE_AT_TRAINED_CONTRACT, BM25, BM25_MODEL_LABEL, MINILM, NAMED_MODELS, TRAINED
from workbench.tables import EVAL_CELL_KEY, EVAL_PER_QUERY, EVAL_RESULTS
from workbench.train.card import refresh_model_cards

log = logging.getLogger(__name__)
STAGE = "eval"

METRICS = RETRIEVAL_METRICS
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
    return run_stage(run, EVAL, config, registry, options={"systems": systems}, progress=progress)


def outside_inputs(section: EvalSection, pipeline: PipelineSection, train: TrainSection) -> list[str]:
    """The data folders and model folders eval reads from outside the run (they join its digest)."""
    paths = [d for d in (section.data_dir, *(t.data_dir for t in pipeline.eval_also)) if d]
    models = (section.model, section.contract_from, train.model)
    return paths + [m for m in models if m and m not in NAMED_MODELS]


def seed_exports(run: Run, train: TrainSection) -> list[tuple[int | None, Path]]:
    """(seed, model folder) of every training seed: the first is ``train/model``, further seeds of
    ``[train] seeds`` are ``train/seeds/<seed>/model`` (the train stage's layout)."""
    seeds = list(train.seeds)
    exports: list[tuple[int | None, Path]] = [(seeds[0] if seeds else None, run.stage_dir(Folder.TRAIN) / "model")]
    return exports + [(seed, run.stage_dir(Folder.TRAIN) / "seeds" / str(seed) / "model") for seed in seeds[1:]]


def pipeline_systems(run: Run, pipeline: PipelineSection, train: TrainSection) -> dict[str, dict[str, Any]]:
    """Every system ``[pipeline] eval_systems`` names -> its ``key`` there, its section settings and its seed group.

    ``base`` is ``[train] model`` as it is; ``base@trained-contract`` the same weights under the contract
    of this run's export (so trained minus it isolates what the data did); ``trained`` is the export,
    one system per training seed (``<base>-ft``, ``<base>-ft-seed<N>``), all in the first one's seed group.
    """
    base = train.model or MINILM
    base_name = MINILM if base == MINILM else Path(base).name
    trained = f"{base_name}-ft"
    exports = seed_exports(run, train)
    out: dict[str, dict[str, Any]] = {}
    for key in pipeline.eval_systems:
        if key == BM25:
            out[BM25] = {"key": key, "model": BM25, "contract_from": None, "seed_group": BM25}
        elif key == BASE:
            out[base_name] = {"key": key, "model": base, "contract_from": None, "seed_group": base_name}
        elif key == BASE_AT_TRAINED_CONTRACT:
            out[f"{base_name}@ft-contract"] = {"key": key, "model": base, "contract_from": str(exports[0][1]),
                                               "seed_group": f"{base_name}@ft-contract"}
        elif key == TRAINED:
            for i, (seed, folder) in enumerate(exports):
                name = trained if i == 0 else f"{trained}-seed{seed}"
                out[name] = {"key": key, "model": str(folder), "contract_from": None, "seed_group": trained}
    return out


def eval_sections(run: Run, section: EvalSection, pipeline: PipelineSection, train: TrainSection,
                  systems: str) -> list[EvalSection]:
    """One ``[eval]`` section per (target, system) this call evaluates.

    ``PIPELINE_SYSTEMS``: ``[eval]`` and every ``[[pipeline.eval_also]]`` target, each with every system
    of :func:`pipeline_systems` (or the subset of eval_systems keys a target's ``systems`` names). BM25 ranks
    passages and has no vectors to mine bitext with or a context to read, so it is left out of Tatoeba and
    passkey targets.
    """
    if systems == ONE_SECTION:
        return [section]
    if systems != PIPELINE_SYSTEMS:
        raise ValueError(f"unknown eval systems {systems!r}")
    sections = []
    for target in [{}, *(t.model_dump() for t in pipeline.eval_also)]:
        only = target.pop("systems", None)  # an eval_also target may name a subset of eval_systems
        for system, settings in pipeline_systems(run, pipeline, train).items():
            if only is not None and settings["key"] not in only:
                continue
            if settings["model"] == BM25 and target.get("task", section.task) in ("tatoeba", "passkey"):
                continue
            sections.append(section.model_copy(update={
                **target, "model": settings["model"], "contract_from": settings["contract_from"], "system": system,
                "bm25": False}))
    return sections


def evaluate(inputs: StageInput, eval_section: EvalSection, pipeline: PipelineSection, train: TrainSection) -> StageResult:
    """The eval stage's body: every section of :func:`eval_sections`, then one upsert of the tables."""
    run, registry = inputs.run, inputs.registry
    rows: list[dict[str, Any]] = []
    per_query: list[dict[str, Any]] = []
    query_counts: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    system_names: list[str] = []
    which = inputs.options.get("systems", PIPELINE_SYSTEMS)
    groups = {name: s["seed_group"] for name, s in pipeline_systems(run, pipeline, train).items()} \
        if which == PIPELINE_SYSTEMS else {}
    sections = eval_sections(run, eval_section, pipeline, train, which)
    watch = EvalWatch(inputs.progress, len(sections))  # the CLI's view: task, system, texts/s, ETA
    for index, section in enumerate(sections, 1):
        target = build_target(section, registry)
        built = _build_systems(section, run)
        # the conditions come from the encoder itself: the sharded search below wraps it
        measured_as = {name: _system_conditions(section, name, model, groups) for name, _, model in built}
        # under torchrun every rank encodes its shards of the corpus (workbench/eval/sharded.py)
        systems = sharded.distribute(built, section, target, run)
        section_rows = []
        for system, model_label, model in systems:
            if target.kind == conditions.BITEXT and system_is_bm25(model):
                log.warning("bm25 cannot mine bitext (it ranks passages, it has no sentence vectors): skipped on %s", target.task_name)
                continue
            if target.kind == "passkey" and system_is_bm25(model):
                log.warning("bm25 has no passkey probe (it ranks by shared words, not by a read context): skipped")
                continue
            log.info("eval %s on %s (%s)", system, target.task_name, ", ".join(target.datasets))
            watch.start(index, target, system, model)
            aggregate, scores = _evaluate(run, target, system, model_label, model, measured_as[system])
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
        path = run.stage_dir(Folder.EVAL) / name
        previous = json.loads(path.read_text()) if path.is_file() else {}
        previous.update(update)
        atomic_write_bytes(path, json.dumps(previous, indent=2, sort_keys=True, ensure_ascii=False).encode())
    refresh_model_cards(run)  # the model card of this run's trained model: its Evaluation section, now
    outputs = {run.relative(run.table_path(Folder.EVAL, "results")): table.height,
               run.relative(run.table_path(Folder.EVAL, "per_query")): per_query_table.height}
    return StageResult(STAGE, outputs=outputs,
                       stats={"query_counts": query_counts, "systems": list(dict.fromkeys(system_names))})


def eval_overrides(given: dict[str, Any], *, config_file: Path | None) -> dict[str, Any]:
    """The ``[eval]`` settings of one ``workbench eval`` call: the options ``given``; without
    ``--config`` a call describes one whole evaluation, so every setting it does not give takes its
    default rather than whatever an earlier eval left in ``run.toml``."""
    if config_file is not None:
        return dict(given)
    return {**EvalSection().model_dump(mode="json"), **given}


def eval_rows(run: Run, result: StageResult) -> list[dict[str, Any]]:
    """The ``eval/results.parquet`` rows of the systems and datasets ``result`` evaluated (also when
    the stage was current and nothing ran)."""
    table = run.read_table(Folder.EVAL, "results", EVAL_RESULTS)
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
    if section.model == BM25:
        systems.append((section.system or BM25, BM25_MODEL_LABEL, BM25Search()))
        return systems
    from workbench.encoder import minilm_path
    from workbench.eval.encoders import WorkbenchEncoder
    from workbench.eval.passkey import encoder_overrides

    if section.model == MINILM:
        path, default_name = minilm_path(), MINILM
    else:
        path = Path(section.model).expanduser()
        default_name = path.name
    name = section.system or (f"{default_name}@{Path(section.contract_from).name}-contract" if section.contract_from
                              else default_name)
    encoder = WorkbenchEncoder(
        path,
        cache_root=run.stage_dir(Folder.EVAL) / "embeddings",
        pooling=section.pooling,
        batch_size=section.batch_size,
        device=section.device,
        name=name,
        contract_from=Path(section.contract_from).expanduser() if section.contract_from else None,
        **encoder_overrides(section),
    )
    systems.append((name, section.model if section.model == MINILM else str(path), encoder))
    if section.bm25:
        systems.append((BM25, BM25_MODEL_LABEL, BM25Search()))
    return systems


def _system_conditions(section: Any, system: str, model: Any, groups: dict[str, str]) -> dict[str, Any]:
    """The system's side of the condition columns: how it ran (contract, max_length), what trained it
    (for the regime), its training seed and seed group."""
    if system_is_bm25(model):
        return {"lexical": True, "max_length": None, "contract_from": None, "training_seed": None,
                "seed_group": groups.get(system, system), "name": BM25, "trained_from": None,
                "instruction_for": lambda task_metadata: (conditions.NO_INSTRUCTION, "none")}
    spec = model.spec
    facts = _contract_facts(Path(section.contract_from or spec.path))
    trained_here = not section.contract_from and "trained_on" in facts
    # the encoder's own method, bound before the sharded search wraps it (that wrapper has none)
    return {"lexical": False, "max_length": model.max_length, "contract_from": section.contract_from,
            "training_seed": facts.get("seed") if trained_here else None, "seed_group": groups.get(system, system),
            "name": f"{section.model} {spec.path}", "trained_from": facts.get("base_model") if trained_here else None,
            "instruction_for": model.instruction_for}


def _measured_under(target: Target, subset: str, language: str, system_conditions: dict[str, Any],
                    instruction: tuple[str, str]) -> dict[str, Any]:
    """The condition columns of one subset's rows: the target's data conditions and the system's."""
    return {
        **target.conditions(subset), "instruction": instruction[0], "instruction_source": instruction[1],
        "max_length": system_conditions["max_length"],
        "regime": conditions.regime(system_conditions["name"], target.benchmark, language,
                                    lexical=system_conditions["lexical"], trained_from=system_conditions["trained_from"]),
        "contract_from": system_conditions["contract_from"],
        "training_seed": system_conditions["training_seed"], "seed_group": system_conditions["seed_group"],
    }


def _contract_facts(folder: Path) -> dict[str, Any]:
    from workbench.encoder import CONTRACT_FILE

    path = folder / CONTRACT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _cluster_ids(qrels: dict[str, dict[str, int]]) -> dict[str, str]:
    """Query id -> cluster: queries that share a relevant passage (connected through shared ones) form one
    cluster, named by its smallest query id; XQuAD's questions on one paragraph are one cluster."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_query: dict[str, str] = {}
    for query, docs in qrels.items():
        find(query)
        for doc, relevance in docs.items():
            if relevance > 0:
                if doc in first_query:
                    a, b = find(query), find(first_query[doc])
                    if a != b:
                        parent[max(a, b)] = min(a, b)
                else:
                    first_query[doc] = query
    return {query: find(query) for query in qrels}


# -- evaluation ----------------------------------------------------------------------------------
def _evaluate(run: Run, target: Target, system: str, model_label: str, model: Any,
              system_conditions: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """mteb on one system: (aggregate rows for results.parquet, per-query rows for per_query.parquet)."""
    import mteb
    from mteb.cache import ResultCache

    from workbench.eval.per_query import bitext_scores, retrieval_scores

    if target.kind == conditions.PASSKEY:  # a direct top-1 computation over its own documents (workbench/eval/passkey.py)
        return _passkey(run, target, system, model_label, model, system_conditions)
    eval_dir = run.stage_dir(Folder.EVAL)
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
    metrics = BITEXT_METRICS if target.kind == conditions.BITEXT else METRICS
    instruction = system_conditions["instruction_for"](target.task.metadata)
    rows: list[dict[str, Any]] = []
    per_query: list[dict[str, Any]] = []
    for task_result in result.task_results:
        for split, scores in task_result.scores.items():
            for score in scores:
                subset: str = score["hf_subset"]  # mteb types its score dicts dict[str, Any]
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
                measured_under = _measured_under(target, subset, key["language"], system_conditions, instruction)
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
                            **measured_under,
                        }
                    )
                ranking = ranked.get(subset, {}).get(split)
                if ranking is None:
                    raise WorkbenchError(f"mteb saved no predictions for {subset}/{split}", where=str(predictions_file))
                if target.kind == conditions.BITEXT:
                    per_metric = {ACCURACY: bitext_scores(ranking["sentence1-sentence2"])}
                    clusters: dict[str, str] = {}  # every sentence pair is its own cluster
                else:
                    per_metric = retrieval_scores(ranking, target.qrels[subset], METRICS)
                    clusters = _cluster_ids(target.qrels[subset])
                for metric, by_query in per_metric.items():
                    per_query.extend({**key, "metric": metric, "query_id": q, "score": v * 100,
                                      "cluster": clusters.get(q, q)} for q, v in by_query.items())
                    mean = 100 * sum(by_query.values()) / max(len(by_query), 1)
                    if abs(mean - 100 * float(score[metric])) > 1e-2:  # would be a bug: the table must add up
                        log.warning("%s %s %s %s: per-query mean %.3f differs from mteb's %.3f",
                                    system, key["dataset"], split, metric, mean, 100 * float(score[metric]))
    return rows, per_query


def _passkey(run: Run, target: Target, system: str, model_label: str, model: Any,
             system_conditions: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The passkey probe's rows, with the same condition columns as every other task's (its queries take
    the instruction the contract gives its task name; every query is its own cluster)."""
    from types import SimpleNamespace

    from workbench.eval.passkey import TASK_NAME

    rows, per_query = target.task.evaluate(run, system, model_label, model)
    instruction = system_conditions["instruction_for"](SimpleNamespace(name=TASK_NAME, prompt=None))
    for row in rows:
        row.update(_measured_under(target, row["language"], row["language"], system_conditions, instruction))
    for row in per_query:
        row["cluster"] = row["query_id"]
    return rows, per_query


def _write_trec_runs(data: dict[str, Any], folder: Path, target: Target) -> None:
    """mteb's predictions (parsed JSON) -> one TREC run file per language (top RUN_DEPTH per query)."""
    for subset, splits in data.items():
        if subset == "mteb_model_meta":
            continue
        for split, ranking in splits.items():
            lines: list[str] = []
            for qid, docs in ranking.items():
                ordered = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:RUN_DEPTH]
                lines.extend(f"{qid} Q0 {doc} {rank} {score:.6f} {target.task_name}" for rank, (doc, score) in enumerate(ordered, 1))
            atomic_write_bytes(folder / f"{target.task_name}-{subset}-{split}.trec", ("\n".join(lines) + "\n").encode())


def _set_aside_older_tables(run: Run) -> None:
    """A results table from before the condition columns cannot be joined with new rows (its conditions are
    unknown): it is renamed ``*.before-conditions.parquet`` (kept, never deleted) and the eval starts afresh."""
    from workbench.run import read_parquet_unchecked
    from workbench.tables import EVAL_CONDITION_COLUMNS

    for name in ("results", "per_query"):
        path = run.stage_dir(Folder.EVAL) / f"{name}.parquet"
        if not path.is_file():
            continue
        columns = read_parquet_unchecked(path).columns
        wanted = EVAL_CONDITION_COLUMNS if name == "results" else ("cluster",)
        if not all(c in columns for c in wanted):
            aside = path.with_name(f"{name}.before-conditions.parquet")
            path.replace(aside)
            log.warning("%s was written by an older eval (no condition columns); kept as %s, this eval starts a new table",
                        path, aside.name)


def _upsert(run: Run, rows: list[dict[str, Any]]) -> pl.DataFrame:
    _set_aside_older_tables(run)
    new = pl.DataFrame(rows, schema=EVAL_RESULTS)
    if run.has_table(Folder.EVAL, "results"):
        old = run.read_table(Folder.EVAL, "results", EVAL_RESULTS)
        new = pl.concat([old.join(new.select(RESULT_KEY), on=list(RESULT_KEY), how="anti", nulls_equal=True), new])
    new = new.sort(["task", "dataset", "system", "metric"])
    run.write_table(Folder.EVAL, "results", new, EVAL_RESULTS)
    return new


def _upsert_per_query(run: Run, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Replace every (system, model, task, dataset, language, split, metric) group measured now."""
    new = pl.DataFrame(rows, schema=EVAL_PER_QUERY)
    if run.has_table(Folder.EVAL, "per_query"):
        old = run.read_table(Folder.EVAL, "per_query", EVAL_PER_QUERY)
        new = pl.concat([old.join(new.select(RESULT_KEY).unique(), on=list(RESULT_KEY), how="anti", nulls_equal=True), new])
    new = new.sort(["task", "dataset", "system", "metric", "query_id"])
    run.write_table(Folder.EVAL, "per_query", new, EVAL_PER_QUERY)
    return new


EVAL = Stage(STAGE, reads=("train",), sections=(EvalSection, PipelineSection, TrainSection), body=evaluate,
             writes=(Folder.EVAL,), outside=outside_inputs,
             check=checks.eval)
