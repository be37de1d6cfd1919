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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from workbench.config import RunConfig
from workbench.errors import UnknownLanguageError, WorkbenchError
from workbench.languages import Registry
from workbench.run import Run, StageResult, atomic_write_bytes, file_sha256, now
from workbench.runner import run_stage
from workbench.stages import StageInput
from workbench.tables import EVAL_PER_QUERY, EVAL_RESULTS

log = logging.getLogger(__name__)
STAGE = "eval"

METRICS = ("ndcg_at_10", "recall_at_100", "recall_at_10", "mrr_at_10", "ndcg_at_100")
BITEXT_METRICS = ("f1", "accuracy", "precision", "recall")
RESULT_KEY = ("system", "model", "task", "dataset", "language", "split", "metric")
MIRACL_TASKS = {"full": "MIRACLRetrieval", "hard-negatives": "MIRACLRetrievalHardNegatives"}
MIRACL_SUBSET_TASK = "MIRACLRetrievalSubset"  # a local folder holding part of a language's corpus
# MIRACL v1.0 passages per language: mteb's MIRACLRetrieval descriptive statistics (dev
# num_samples minus the dev queries). A local corpus of another size is labelled a subset.
MIRACL_CORPUS_SIZES = {
    "ar": 2061414, "bn": 297265, "de": 15866222, "en": 32893221, "es": 10373953, "fa": 2207172,
    "fi": 1883509, "fr": 14636953, "hi": 506264, "id": 1446315, "ja": 6953614, "ko": 1486752,
    "ru": 9543918, "sw": 131924, "te": 518079, "th": 542166, "yo": 49043, "zh": 4934368,
}
RUN_DEPTH = 100


@dataclass
class _Target:
    """One mteb task to run, with per-language counts and dataset labels for the results table."""

    task: Any
    task_name: str
    split: str
    datasets: dict[str, str]  # subset -> dataset label
    counts: dict[str, dict[str, int]]  # subset -> query/doc counts
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset label -> data source
    kind: str = "retrieval"  # or "bitext"
    languages: dict[str, str] = field(default_factory=dict)  # subset -> language column (default: subset)
    qrels: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # subset -> qrels (mteb unloads its copy)


ONE_SECTION = "[eval]"  # run_eval's systems: [eval]'s model (and BM25 when [eval] bm25) on [eval]'s task
PIPELINE_SYSTEMS = "[pipeline]"  # the pipeline's: every [pipeline] eval_systems entry on [eval] and each eval_also target


def run_eval(run: Run, config: RunConfig, registry: Registry, *, systems: str = ONE_SECTION) -> StageResult:
    """Evaluate through the runner and upsert ``eval/results.parquet``: by default ``config.eval.model``
    (and BM25 when asked) on ``[eval]``'s task; ``systems=PIPELINE_SYSTEMS`` is what ``workbench run``
    evaluates (see :func:`eval_sections`)."""
    return run_stage(run, STAGE, config, registry, options={"systems": systems})


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
        for key in config.pipeline.eval_systems:
            system, model = named[key]
            if model == "bm25" and target.get("task", config.eval.task) == "tatoeba":
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
    for section in eval_sections(run, inputs.config, inputs.options.get("systems", PIPELINE_SYSTEMS)):
        target = _build_target(section, registry)
        systems = _build_systems(section, run)
        section_rows = []
        for system, model_label, model in systems:
            if target.kind == "bitext" and system_is_bm25(model):
                log.warning("bm25 cannot mine bitext (it ranks passages, it has no sentence vectors): skipped on %s", target.task_name)
                continue
            log.info("eval %s on %s (%s)", system, target.task_name, ", ".join(target.datasets))
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
    outputs = {"eval/results.parquet": table.height, "eval/per_query.parquet": per_query_table.height}
    return StageResult(STAGE, outputs=outputs,
                       stats={"query_counts": query_counts, "systems": list(dict.fromkeys(system_names))})


def eval_rows(run: Run, result: StageResult) -> list[dict[str, Any]]:
    """The ``eval/results.parquet`` rows of the systems and datasets ``result`` evaluated (also when
    the stage was current and nothing ran)."""
    table = run.read_table("eval", "results", EVAL_RESULTS)
    return table.filter(pl.col("system").is_in(result.stats.get("systems", []))
                        & pl.col("dataset").is_in(list(result.stats.get("query_counts", {})))).to_dicts()


# -- tasks ---------------------------------------------------------------------------------------
def system_is_bm25(model: Any) -> bool:
    from workbench.eval.bm25 import BM25Search

    return isinstance(model, BM25Search)


def _local_source(data_dir: Path, files: list[Path], **info: Any) -> dict[str, Any]:
    """Where a local dataset came from: the folder and each file's sha256 (to match against other data)."""
    return {
        "origin": "local",
        "location": str(data_dir.resolve()),
        "files": {str(f.resolve().relative_to(data_dir.resolve())) if f.resolve().is_relative_to(data_dir.resolve()) else str(f): file_sha256(f) for f in files},
        **info,
    }


def _build_target(section: Any, registry: Registry) -> _Target:
    if section.task == "miracl":
        return _miracl_target(section, registry)
    if section.task == "tatoeba":
        return _tatoeba_target(section, registry)
    if section.data_dir is None:
        example = "../shared/data/xquad or examples/data/xquad" if section.task == "xquad" else "a BEIR folder"
        raise WorkbenchError(
            f"task '{section.task}' reads local files", where="--data-dir", fix=f"give --data-dir ({example})"
        )
    return _beir_target(section, registry)


def _miracl_target(section: Any, registry: Registry) -> _Target:
    from workbench.eval.local_tasks import MIRACL_INSTRUCTION, build_local_task, load_miracl_split

    miracl_codes = [lang.code for lang in registry.miracl]
    for code in section.languages:
        registry.get(code)  # unknown code: one line with a suggestion
        if code not in miracl_codes:
            raise UnknownLanguageError(
                f"'{code}' is not a MIRACL language", where="--languages", fix=f"MIRACL has {' '.join(miracl_codes)}"
            )
    split = section.split or "dev"
    task_name = MIRACL_TASKS[section.corpus]
    suffix = "full" if section.corpus == "full" else "hardneg"
    if section.data_dir is not None:
        data_dir = Path(section.data_dir)
        if not data_dir.is_dir():
            raise WorkbenchError("data folder not found", where=str(data_dir), fix="give --data-dir a MIRACL-format folder")
        languages = section.languages or [
            c for c in miracl_codes
            if any((data_dir / p).is_file() for p in (f"corpus/{c}/corpus.jsonl.gz", f"corpus/{c}/corpus.jsonl", f"{c}/corpus.jsonl.gz", f"{c}/corpus.jsonl"))
        ]
        if not languages:
            raise WorkbenchError("no MIRACL language has a corpus here", where=str(data_dir), fix="expected corpus/<lang>/corpus.jsonl[.gz]")
        splits = {code: load_miracl_split(data_dir, code, split) for code in languages}
        # a local folder is evaluated as it is: its labels name the corpus it holds (the full
        # MIRACL corpus of a language, or part of it), whatever --hard-negatives/--full said
        variants = {
            c: "full" if len(s.corpus) == MIRACL_CORPUS_SIZES.get(c) else f"subset{len(s.corpus)}" for c, s in splits.items()
        }
        task_name = MIRACL_TASKS["full"] if all(v == "full" for v in variants.values()) else MIRACL_SUBSET_TASK
        if section.corpus == "hard-negatives":
            log.info("%s holds %s corpora: labelled %s (the hard-negatives corpus comes from the hub)", data_dir,
                     ", ".join(f"{c} {v}" for c, v in variants.items()), task_name)
        task = build_local_task(
            task_name,
            splits,
            eval_langs={c: [_lang_tag(registry, c)] for c in languages},
            data_dir=data_dir,
            split=split,
            instruction=MIRACL_INSTRUCTION,
        )
        counts = {c: s.stats for c, s in splits.items()}
        datasets = {c: f"miracl-{c}-{split}-{variants[c]}" for c in languages}
        sources = {
            datasets[c]: _local_source(data_dir, s.files, task=task_name, corpus=variants[c], docs=len(s.corpus),
                                       full_corpus_docs=MIRACL_CORPUS_SIZES.get(c))
            for c, s in splits.items()
        }
        return _Target(task, task_name, split, datasets, counts, sources, qrels={c: s.qrels for c, s in splits.items()})
    return _hub_target(task_name, section.languages or miracl_codes, split, registry, suffix)


def _load_from_hub(task: Any, *, where: str, fix: str) -> None:
    """``task.load_data()``; any failure becomes one WorkbenchError line naming the dataset and the fix."""
    try:
        task.load_data()
    except Exception as err:  # datasets/huggingface_hub raise many types when offline; one line names the fix
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise WorkbenchError(
            f"cannot load {task.metadata.dataset['path']} from the Hugging Face hub ({type(err).__name__}: {first})",
            where=where,
            fix=fix,
        ) from None


def _hub_target(task_name: str, languages: list[str], split: str, registry: Registry, suffix: str) -> _Target:
    import mteb

    task = mteb.get_task(task_name, languages=[registry.get(c).iso639_3 for c in languages])
    _load_from_hub(task, where=task_name, fix="check the network / HF_HUB_OFFLINE, or evaluate a local copy with --data-dir DIR")
    counts: dict[str, dict[str, int]] = {}
    all_qrels: dict[str, dict[str, dict[str, int]]] = {}
    for subset in task.hf_subsets:
        data = task.dataset[subset][split]
        qrels = all_qrels[subset] = {q: dict(docs) for q, docs in data["relevant_docs"].items()}
        qids = list(data["queries"]["id"])
        counts[subset] = {
            "queries_total": len(qids),
            "queries_without_qrels": sum(1 for q in qids if not qrels.get(q)),
            "queries_without_positives": sum(1 for q in qids if qrels.get(q) and not any(v > 0 for v in qrels[q].values())),
            "docs": len(data["corpus"]),
        }
    datasets = {s: f"miracl-{s}-{split}-{suffix}" for s in task.hf_subsets}
    sources = {
        datasets[s]: {"origin": "hub", "location": task.metadata.dataset["path"], "revision": task.metadata.dataset.get("revision"),
                      "task": task_name, "corpus": "full" if suffix == "full" else "hard-negatives"}
        for s in task.hf_subsets
    }
    return _Target(task, task_name, split, datasets, counts, sources, qrels=all_qrels)


def _tatoeba_target(section: Any, registry: Registry) -> _Target:
    """mteb's Tatoeba bitext mining, xxx -> English, for the languages asked (default: all there)."""
    from workbench.eval import bitext

    split = section.split or "test"
    if split != "test":
        raise WorkbenchError(f"Tatoeba has no '{split}' split", where="--split", fix="use test (the default)")
    wanted: dict[str, str] = {}  # Tatoeba code -> workbench code
    by_tatoeba = {lang.tatoeba: lang.code for lang in registry if lang.tatoeba}
    for code in section.languages:
        lang = registry.get(code)  # unknown code: one line with a suggestion
        if code == "en":
            raise UnknownLanguageError("English is the target side of every Tatoeba pair", where="--languages", fix="name the other languages, e.g. -l de,sw")
        if not lang.tatoeba:
            raise UnknownLanguageError(f"'{code}' has no Tatoeba test set", where="--languages",
                                       fix="see the tatoeba column of `workbench languages`")
        wanted[lang.tatoeba] = code
    if section.data_dir is None:
        codes = list(wanted) or sorted(by_tatoeba)
        task = bitext.hub_tatoeba(codes)
        _load_from_hub(task, where=bitext.TASK,
                       fix="check the network / HF_HUB_OFFLINE, or evaluate a local LASER-layout copy with --data-dir DIR")
        subsets = {f"{c}-eng": c for c in codes if f"{c}-eng" in task.hf_subsets}
        counts = {s: {"pairs": len(task.dataset[s][split]), "queries_total": len(task.dataset[s][split]), "docs": len(task.dataset[s][split])} for s in subsets}
        datasets = {s: f"tatoeba-{s}" for s in subsets}
        sources = {datasets[s]: {"origin": "hub", "location": task.metadata.dataset["path"], "revision": task.metadata.dataset.get("revision"),
                                 "task": bitext.TASK, "pairs": counts[s]["pairs"]} for s in subsets}
        languages = {s: by_tatoeba.get(c, c) for s, c in subsets.items()}
        return _Target(task, bitext.TASK, split, datasets, counts, sources, kind="bitext", languages=languages)
    data_dir = Path(section.data_dir)
    if not data_dir.is_dir():
        raise WorkbenchError("data folder not found", where=str(data_dir), fix="give --data-dir a LASER-layout Tatoeba folder")
    present = bitext.available_pairs(data_dir)
    if not present:
        raise WorkbenchError("no tatoeba.<xxx>-eng.<xxx> / .eng file pair here", where=str(data_dir), fix="point --data-dir at a LASER-layout Tatoeba folder")
    for code, lang in wanted.items():
        if code not in present:
            raise UnknownLanguageError(f"no Tatoeba data for '{lang}' ({code})", where=str(data_dir),
                                       fix=f"this folder has {' '.join(by_tatoeba.get(c, c) for c in present)}")
    pairs = [bitext.load_laser_pair(data_dir, c) for c in (list(wanted) or present)]
    variants = {p.code: "" if len(p.sentences) == bitext.published_pairs(p.code) else f"-subset{len(p.sentences)}" for p in pairs}
    task_name = bitext.TASK if not any(variants.values()) else bitext.SUBSET_TASK
    task = bitext.build_local_tatoeba(data_dir, pairs, task_name=task_name)
    datasets = {p.hf_subset: f"tatoeba-{p.hf_subset}{variants[p.code]}" for p in pairs}
    counts = {p.hf_subset: {"pairs": len(p.sentences), "queries_total": len(p.sentences), "docs": len(p.english)} for p in pairs}
    sources = {
        datasets[p.hf_subset]: _local_source(data_dir, p.files, task=task_name, pairs=len(p.sentences),
                                             published_pairs=bitext.published_pairs(p.code))
        for p in pairs
    }
    languages = {p.hf_subset: by_tatoeba.get(p.code, p.code) for p in pairs}
    return _Target(task, task_name, split, datasets, counts, sources, kind="bitext", languages=languages)


def _beir_target(section: Any, registry: Registry) -> _Target:
    from workbench.eval.local_tasks import build_local_task, load_beir_split
    from workbench.eval.encoders import task_instructions

    data_dir = Path(section.data_dir)
    if not data_dir.is_dir():
        raise WorkbenchError("data folder not found", where=str(data_dir), fix="give --data-dir a BEIR-layout folder")
    split = section.split or "test"
    if (data_dir / "corpus.jsonl").is_file() or (data_dir / "corpus.jsonl.gz").is_file():
        folders = {section.languages[0] if section.languages else data_dir.name: data_dir}
    else:
        available = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and any(p.glob("corpus.jsonl*")))
        if not available:
            raise WorkbenchError("no corpus.jsonl here or in any subfolder", where=str(data_dir), fix="point --data-dir at a BEIR-layout folder")
        wanted = section.languages or available
        for code in wanted:
            if code not in available:
                raise UnknownLanguageError(
                    f"no data for language '{code}'", where=str(data_dir), fix=f"this folder has {' '.join(available)}"
                )
        folders = {code: data_dir / code for code in wanted}
    # a BEIR folder is its own task, named after the folder ("BEIR-scifact"); one instruction for all
    folder_name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in data_dir.resolve().name)
    task_name = "XQuADRetrieval" if section.task == "xquad" else f"BEIR-{folder_name}"
    prefix = "xquad" if section.task == "xquad" else f"beir-{folder_name}"
    splits = {code: load_beir_split(folder, code, split) for code, folder in folders.items()}
    instructions = task_instructions()
    task = build_local_task(
        task_name,
        splits,
        eval_langs={c: [_lang_tag(registry, c)] for c in splits},
        data_dir=data_dir,
        split=split,
        instruction=instructions.get(task_name, instructions.get("BEIRRetrieval")),
    )
    datasets = {c: (f"{prefix}-{c}" if c != data_dir.name else prefix) for c in splits}
    sources = {datasets[c]: _local_source(data_dir, s.files, task=task_name, docs=len(s.corpus)) for c, s in splits.items()}
    return _Target(task, task_name, split, datasets, {c: s.stats for c, s in splits.items()}, sources,
                   qrels={c: s.qrels for c, s in splits.items()})


def _lang_tag(registry: Registry, code: str) -> str:
    """mteb language tag (ISO 639-3 + script), e.g. yor-Latn; eng-Latn for folder names that are not codes."""
    if code in registry:
        lang = registry.get(code)
        script = "Hans" if lang.scripts[0] == "Hani" else lang.scripts[0]
        return f"{lang.iso639_3}-{script}"
    log.info("subset '%s' is not a language code; tagging it eng-Latn for mteb", code)
    return "eng-Latn"


# -- systems -------------------------------------------------------------------------------------
def _build_systems(section: Any, run: Run) -> list[tuple[str, str, Any]]:
    """(system name, model label, mteb model) for the model and, when asked, BM25."""
    from workbench.eval.bm25 import BM25Search

    systems: list[tuple[str, str, Any]] = []
    if section.model == "bm25":
        systems.append((section.system or "bm25", "bm25s", BM25Search()))
        return systems
    from workbench.eval.encoders import WorkbenchEncoder, minilm_path

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
    )
    systems.append((name, section.model if section.model == "minilm" else str(path), encoder))
    if section.bm25:
        systems.append(("bm25", "bm25s", BM25Search()))
    return systems


# -- evaluation ----------------------------------------------------------------------------------
def _evaluate(run: Run, target: _Target, system: str, model_label: str, model: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """mteb on one system: (aggregate rows for results.parquet, per-query rows for per_query.parquet)."""
    import mteb
    from mteb.cache import ResultCache

    from workbench.eval.per_query import bitext_scores, retrieval_scores

    eval_dir = run.stage_dir("eval")
    predictions = eval_dir / "predictions" / system
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
        _write_trec_runs(ranked, eval_dir / "runs" / system, target)
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


def _write_trec_runs(data: dict[str, Any], folder: Path, target: _Target) -> None:
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
        new = pl.concat([old.join(new.select(RESULT_KEY), on=list(RESULT_KEY), how="anti"), new])
    new = new.sort(["task", "dataset", "system", "metric"])
    run.write_table("eval", "results", new, EVAL_RESULTS)
    return new


def _upsert_per_query(run: Run, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Replace every (system, model, task, dataset, language, split, metric) group measured now."""
    new = pl.DataFrame(rows, schema=EVAL_PER_QUERY)
    if run.has_table("eval", "per_query"):
        old = run.read_table("eval", "per_query", EVAL_PER_QUERY)
        new = pl.concat([old.join(new.select(RESULT_KEY).unique(), on=list(RESULT_KEY), how="anti"), new])
    new = new.sort(["task", "dataset", "system", "metric", "query_id"])
    run.write_table("eval", "per_query", new, EVAL_PER_QUERY)
    return new
