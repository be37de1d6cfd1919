"""The eval stage: mteb retrieval (hub or local files) for a model and/or BM25 -> ``eval/results.parquet``.

Writes into the run directory:

* ``eval/results.parquet`` (EVAL_RESULTS): one row per (system, task, dataset, language, split,
  metric), values in percent; rows of earlier evals with other keys are kept (upsert);
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from workbench.config import RunConfig
from workbench.errors import UnknownLanguageError, WorkbenchError
from workbench.languages import Registry
from workbench.run import Run, StageResult, atomic_write_bytes, now
from workbench.tables import EVAL_RESULTS

log = logging.getLogger(__name__)

METRICS = ("ndcg_at_10", "recall_at_100", "recall_at_10", "mrr_at_10", "ndcg_at_100")
RESULT_KEY = ("system", "model", "task", "dataset", "language", "split", "metric")
MIRACL_TASKS = {"full": "MIRACLRetrieval", "hard-negatives": "MIRACLRetrievalHardNegatives"}
RUN_DEPTH = 100


@dataclass
class _Target:
    """One mteb task to run, with per-language counts and dataset labels for the results table."""

    task: Any
    task_name: str
    split: str
    datasets: dict[str, str]  # subset -> dataset label
    counts: dict[str, dict[str, int]]  # subset -> query/doc counts


def run_eval(run: Run, config: RunConfig, registry: Registry) -> StageResult:
    """Evaluate ``config.eval.model`` (and BM25 when asked) and upsert ``eval/results.parquet``."""
    section = config.eval
    started = now()
    target = _build_target(section, registry)
    systems = _build_systems(section, run)
    rows: list[dict[str, Any]] = []
    for system, model_label, model in systems:
        log.info("eval %s on %s (%s)", system, target.task_name, ", ".join(target.datasets))
        rows.extend(_evaluate(run, target, system, model_label, model))
    table = _upsert(run, rows)
    counts_path = run.stage_dir("eval") / "query_counts.json"
    previous = json.loads(counts_path.read_text()) if counts_path.is_file() else {}
    previous.update({target.datasets[s]: c for s, c in target.counts.items()})
    atomic_write_bytes(counts_path, json.dumps(previous, indent=2, sort_keys=True).encode())
    outputs = {"eval/results.parquet": table.height}
    stats = {"query_counts": {target.datasets[s]: c for s, c in target.counts.items()}, "systems": [s[0] for s in systems]}
    run.record_stage("eval", status="complete", config_hash=section.fingerprint(), outputs=outputs, stats=stats, started_at=started)
    return StageResult(stage="eval", outputs=outputs, stats={**stats, "rows": rows})


# -- tasks ---------------------------------------------------------------------------------------
def _build_target(section: Any, registry: Registry) -> _Target:
    if section.task == "miracl":
        return _miracl_target(section, registry)
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
        task = build_local_task(
            task_name,
            splits,
            eval_langs={c: [_lang_tag(registry, c)] for c in languages},
            data_dir=data_dir,
            split=split,
            instruction=MIRACL_INSTRUCTION,
        )
        counts = {c: s.stats for c, s in splits.items()}
        return _Target(task, task_name, split, {c: f"miracl-{c}-{split}-{suffix}" for c in languages}, counts)
    return _hub_target(task_name, section.languages or miracl_codes, split, registry, suffix)


def _hub_target(task_name: str, languages: list[str], split: str, registry: Registry, suffix: str) -> _Target:
    import mteb

    task = mteb.get_task(task_name, languages=[registry.get(c).iso639_3 for c in languages])
    try:
        task.load_data()
    except Exception as err:  # datasets/huggingface_hub raise many types when offline; one line names the fix
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise WorkbenchError(
            f"cannot load {task.metadata.dataset['path']} from the Hugging Face hub ({type(err).__name__}: {first})",
            where=task_name,
            fix="check the network / HF_HUB_OFFLINE, or evaluate a local copy with --data-dir DIR",
        ) from None
    counts: dict[str, dict[str, int]] = {}
    for subset in task.hf_subsets:
        data = task.dataset[subset][split]
        qrels = data["relevant_docs"]
        qids = list(data["queries"]["id"])
        counts[subset] = {
            "queries_total": len(qids),
            "queries_without_qrels": sum(1 for q in qids if not qrels.get(q)),
            "queries_without_positives": sum(1 for q in qids if qrels.get(q) and not any(v > 0 for v in qrels[q].values())),
            "docs": len(data["corpus"]),
        }
    return _Target(task, task_name, split, {s: f"miracl-{s}-{split}-{suffix}" for s in task.hf_subsets}, counts)


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
    task_name = "XQuADRetrieval" if section.task == "xquad" else "BEIRRetrieval"
    prefix = "xquad" if section.task == "xquad" else f"beir-{data_dir.name}"
    splits = {code: load_beir_split(folder, code, split) for code, folder in folders.items()}
    task = build_local_task(
        task_name,
        splits,
        eval_langs={c: [_lang_tag(registry, c)] for c in splits},
        data_dir=data_dir,
        split=split,
        instruction=task_instructions().get(task_name),
    )
    datasets = {c: (f"{prefix}-{c}" if c != data_dir.name else prefix) for c in splits}
    return _Target(task, task_name, split, datasets, {c: s.stats for c, s in splits.items()})


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
def _evaluate(run: Run, target: _Target, system: str, model_label: str, model: Any) -> list[dict[str, Any]]:
    import mteb
    from mteb.cache import ResultCache

    eval_dir = run.stage_dir("eval")
    predictions = eval_dir / "predictions" / system
    result = mteb.evaluate(
        model,
        target.task,
        cache=ResultCache(eval_dir / "mteb"),
        prediction_folder=predictions,
        overwrite_strategy="always",
        show_progress_bar=False,
    )
    _write_trec_runs(predictions / f"{target.task_name}_predictions.json", eval_dir / "runs" / system, target)
    created = now()
    rows = []
    for task_result in result.task_results:
        for split, scores in task_result.scores.items():
            for score in scores:
                subset = score["hf_subset"]
                counts = target.counts.get(subset, {})
                n_queries = counts.get("queries_total", 0) - counts.get("queries_without_qrels", 0)
                for metric in METRICS:
                    rows.append(
                        {
                            "system": system,
                            "model": model_label,
                            "task": target.task_name,
                            "dataset": target.datasets.get(subset, subset),
                            "language": subset,
                            "split": split,
                            "metric": metric,
                            "value": round(float(score[metric]) * 100, 3),
                            "n_queries": n_queries,
                            "n_docs": counts.get("docs", 0),
                            "source": "measured",
                            "created_at": created,
                        }
                    )
    return rows


def _write_trec_runs(predictions_file: Path, folder: Path, target: _Target) -> None:
    """mteb's predictions JSON -> one TREC run file per language (top RUN_DEPTH per query)."""
    if not predictions_file.is_file():
        raise WorkbenchError("mteb wrote no predictions file", where=str(predictions_file))
    data = json.loads(predictions_file.read_text(encoding="utf-8"))
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
