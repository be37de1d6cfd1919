"""Real inputs for the report tests, built from shared data (no invented scores).

- :func:`bm25_results`: BM25 (bm25s) measured here, for real, on the full MIRACL Yoruba dev set
  (49,043 passages, 119 queries) and on XQuAD German (240 paragraphs), scored with pytrec_eval.
- :func:`mteb_results`: EVAL_RESULTS rows copied from the MTEB results repository CSV
  (``reference/mteb_miracl_ndcg10.csv``) for one model, labelled with that source (not measured here).
- :func:`audit_summary`: an AUDIT_SUMMARY table. Its counts are TEST FIXTURE values (the audit stage is
  built in parallel); they exercise the report, they are never used for a committed report.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import polars as pl

from workbench import conditions
from workbench.tables import AUDIT_SUMMARY, EVAL_PER_QUERY, EVAL_RESULTS


def _bm25_per_query(doc_ids, doc_texts, queries: dict[str, str], qrels: dict[str, dict[str, int]],
                    k1: float = 1.5, b: float = 0.75) -> dict[str, dict[str, float]]:
    """metric -> query_id -> score in percent, by bm25s + pytrec_eval (real retrieval, real scoring)."""
    import bm25s
    import pytrec_eval

    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(bm25s.tokenize(doc_texts, stopwords=None, show_progress=False), show_progress=False)
    qids = list(queries)
    tokens = bm25s.tokenize([queries[q] for q in qids], stopwords=None, show_progress=False)
    k = min(100, len(doc_ids))
    hits, scores = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
    run = {q: {doc_ids[int(d)]: float(s) for d, s in zip(hits[i], scores[i])} for i, q in enumerate(qids)}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    per_query = evaluator.evaluate(run)
    return {
        "ndcg_at_10": {q: 100 * v["ndcg_cut_10"] for q, v in per_query.items()},
        "recall_at_100": {q: 100 * v["recall_100"] for q, v in per_query.items()},
    }


def _bm25_scores(doc_ids, doc_texts, queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    per_query = _bm25_per_query(doc_ids, doc_texts, queries, qrels)
    return {metric: sum(scores.values()) / len(scores) for metric, scores in per_query.items()}


def _rows(system, model, task, dataset, language, metrics, n_queries, n_docs, source="measured", *, benchmark,
          corpus, revision, lexical=False, instruction=conditions.NO_INSTRUCTION, max_length=None):
    """EVAL_RESULTS rows with their condition columns, as the eval stage writes them."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    kind = conditions.BITEXT if benchmark == "tatoeba" else conditions.RETRIEVAL
    return [
        {"system": system, "model": model, "task": task, "dataset": dataset, "language": language, "split": split,
         "metric": metric, "value": round(value, 3), "n_queries": n_queries, "n_docs": n_docs, "source": source,
         "created_at": now, "benchmark": benchmark, "task_kind": kind, "corpus": corpus, "revision": revision,
         "instruction": instruction, "instruction_source": "none" if instruction == conditions.NO_INSTRUCTION else "source",
         "max_length": max_length, "regime": conditions.regime(model, benchmark, language, lexical=lexical),
         "contract_from": None, "training_seed": None, "seed_group": system}
        for metric, value in metrics.items()
        for split in ["dev" if benchmark == "miracl" else "test"]
    ]


def bm25_miracl_yo(shared: Path) -> list[dict]:
    miracl = shared / "miracl"
    docs = [json.loads(line) for line in gzip.open(miracl / "corpus" / "yo" / "corpus.jsonl.gz", "rt", encoding="utf-8")]
    queries = dict(line.rstrip("\n").split("\t", 1) for line in open(miracl / "topics.miracl-v1.0-yo-dev.tsv", encoding="utf-8"))
    qrels: dict[str, dict[str, int]] = {}
    for line in open(miracl / "qrels.miracl-v1.0-yo-dev.tsv", encoding="utf-8"):
        qid, _, docid, rel = line.split()
        qrels.setdefault(qid, {})[docid] = int(rel)
    metrics = _bm25_scores([d["docid"] for d in docs], [f"{d.get('title') or ''} {d['text']}" for d in docs], queries, qrels)
    return _rows("bm25", "bm25s", "MIRACLRetrieval", "miracl-yo-dev-full", "yo", metrics, len(queries), len(docs),
                 benchmark="miracl", corpus=conditions.FULL, revision="shared/data/miracl", lexical=True)


def bm25_xquad(shared: Path, language: str) -> list[dict]:
    docs, queries, qrels = _xquad(shared, language)
    metrics = _bm25_scores([d["_id"] for d in docs], [d["text"] for d in docs], queries, qrels)
    return _rows("bm25", "bm25s", "XQuADRetrieval", f"xquad-{language}", language, metrics, len(queries), len(docs),
                 benchmark="xquad", corpus=conditions.FULL, revision="shared/data/xquad", lexical=True)


def _xquad(shared: Path, language: str):
    folder = shared / "xquad" / language
    docs = [json.loads(line) for line in open(folder / "corpus.jsonl", encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(folder / "queries.jsonl", encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = {}
    for line in list(open(folder / "qrels.tsv", encoding="utf-8"))[1:]:
        qid, docid, score = line.split("\t")
        qrels.setdefault(qid, {})[docid] = int(score)
    return docs, queries, qrels


def xquad_measured(shared: Path, languages: list[str], system: str, *, k1: float = 1.5, b: float = 0.75,
                   doc_chars: int | None = None, corpus: str = conditions.FULL,
                   revision: str = "shared/data/xquad") -> tuple[pl.DataFrame, pl.DataFrame]:
    """EVAL_RESULTS and EVAL_PER_QUERY rows of a real BM25 system on XQuAD (per-query scores by pytrec_eval).

    Systems differ by real settings: BM25 parameters ``k1``/``b``, or ``doc_chars`` (index only the
    first characters of each paragraph: a deliberately weaker system for the paired tests). ``shared``
    may be any folder with an ``xquad/<lang>`` layout (the repo's examples/data: a 60-paragraph subset,
    ``corpus=conditions.SUBSET``).
    """
    results, per_query = [], []
    for language in languages:
        docs, queries, qrels = _xquad(shared, language)
        texts = [d["text"][:doc_chars] if doc_chars else d["text"] for d in docs]
        scores = _bm25_per_query([d["_id"] for d in docs], texts, queries, qrels, k1=k1, b=b)
        model = f"bm25s k1={k1} b={b}" + (f" first {doc_chars} chars" if doc_chars else "")
        means = {metric: sum(v.values()) / len(v) for metric, v in scores.items()}
        results += _rows(system, model, "XQuADRetrieval", f"xquad-{language}", language, means, len(queries), len(docs),
                         benchmark="xquad", corpus=corpus, revision=revision, lexical=True)
        paragraph = {q: min(d for d, r in docs_.items() if r > 0) for q, docs_ in qrels.items()}
        for metric, by_query in scores.items():
            per_query += [{"system": system, "model": model, "task": "XQuADRetrieval", "dataset": f"xquad-{language}",
                           "language": language, "split": "test", "metric": metric, "query_id": q, "score": v,
                           "cluster": paragraph[q]}
                          for q, v in by_query.items()]
    return pl.DataFrame(results, schema=EVAL_RESULTS), pl.DataFrame(per_query, schema=EVAL_PER_QUERY)


def bm25_results(shared: Path, path: Path) -> Path:
    rows = bm25_miracl_yo(shared) + bm25_xquad(shared, "de")
    pl.DataFrame(rows, schema=EVAL_RESULTS).write_parquet(path)
    return path


def mteb_results(shared: Path, path: Path, model: str, system: str, task: str = "MIRACLRetrieval",
                 languages: list[str] | None = None) -> Path:
    """EVAL_RESULTS rows copied from the MTEB results CSV for ``model`` (0-1 scale there -> percent)."""
    csv = pl.read_csv(shared / "reference" / "mteb_miracl_ndcg10.csv", infer_schema_length=0)
    sel = csv.filter((pl.col("model") == model) & (pl.col("task") == task))
    if languages:
        sel = sel.filter(pl.col("language").is_in(languages))
    rows = []
    for rec in sel.iter_rows(named=True):
        source = f"MTEB results repository: {model.replace('/', '__')}/{rec['revision']}/{task}.json (copied, not measured here)"
        suffix = "hardneg" if task.startswith("MIRACLRetrievalHardNegatives") else "full"
        hard = task.startswith("MIRACLRetrievalHardNegatives")
        rows += _rows(system, model, task, f"miracl-{rec['language']}-dev-{suffix}", rec["language"],
                      {"ndcg_at_10": 100 * float(rec["ndcg_at_10"]), "recall_at_100": 100 * float(rec["recall_at_100"])},
                      None, None, source=source, benchmark="miracl",
                      corpus=conditions.HARD_NEGATIVES_V1 if hard else conditions.FULL, revision=f"mteb {task}")
    pl.DataFrame(rows, schema=EVAL_RESULTS).write_parquet(path)
    return path


# TEST FIXTURE audit counts (see module docstring): language -> (generated, accepted, reasons, confusions, cost)
FIXTURE_AUDIT = {
    "sw": (40, 22, "wrong_language:12; too_short:6", "en:9; so:3", 0.08),
    "te": (40, 31, "too_short:7; wrong_script:2", "kn:2", 0.09),
    "en": (40, 38, "exact_duplicate:2", "", 0.06),
    "ja": (40, 35, "too_short:5", "zh:4", 0.07),
    "am": (40, 10, "wrong_script:20; wrong_language:10", "ti:8", 0.10),
}


def audit_summary(path: Path, languages: dict | None = None) -> Path:
    rows = []
    for code, (generated, accepted, reasons, confusions, cost) in (languages or FIXTURE_AUDIT).items():
        rows.append({
            "language": code, "planned": generated + 2, "generated": generated, "failed": 2, "accepted": accepted,
            "rejected": generated - accepted, "acceptance_rate": accepted / generated if generated else 0.0,
            "top_reject_reasons": reasons, "top_lid_confusions": confusions, "exact_dup_rate": 0.0,
            "near_dup_rate": 0.0, "distinct_tasks": 10, "distinct_2": 0.5, "prompt_tokens": 1000 * generated,
            "completion_tokens": 500 * generated, "cost_usd": cost,
        })
    pl.DataFrame(rows, schema=AUDIT_SUMMARY).write_parquet(path)
    return path


def tatoeba_measured(shared: Path, languages: dict[str, str], system: str, model_path: str, n: int = 200,
                     contract_from: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """EVAL_RESULTS and EVAL_PER_QUERY rows of a real encoder on Tatoeba bitext mining (LASER files in
    ../shared/data/tatoeba): each of the first ``n`` sentences of a language is matched to its nearest
    English sentence by cosine similarity; a pair scores 100 when that is its translation (accuracy).
    The model runs through the workbench's encoder, under its own contract or ``contract_from``'s.

    ``languages``: workbench code -> Tatoeba code, e.g. {"sw": "swh"}.
    """
    from types import SimpleNamespace

    import numpy as np

    from workbench.eval.encoders import WorkbenchEncoder

    encoder = WorkbenchEncoder(model_path, contract_from=contract_from, batch_size=64, show_progress=False)
    task = SimpleNamespace(name="Tatoeba", type="BitextMining", prompt=None)
    instruction, _ = encoder.instruction_for(task)
    text = "" if instruction == conditions.NO_INSTRUCTION or instruction.startswith(conditions.PREFIX) else instruction
    results, per_query = [], []
    for code, tatoeba in languages.items():
        folder = shared / "tatoeba"
        other = (folder / f"tatoeba.{tatoeba}-eng.{tatoeba}").read_text(encoding="utf-8").splitlines()[:n]
        eng = (folder / f"tatoeba.{tatoeba}-eng.eng").read_text(encoding="utf-8").splitlines()[:n]
        a = encoder.encode_texts(other, instruction=text, as_query=True, task="Tatoeba")
        b = encoder.encode_texts(eng, instruction=text, as_query=True, task="Tatoeba")
        found = np.argmax(a @ b.T, axis=1)
        scores = [100.0 if int(j) == i else 0.0 for i, j in enumerate(found)]
        dataset = f"tatoeba-{tatoeba}-eng-first{n}"
        results += [{**row, "contract_from": contract_from}
                    for row in _rows(system, model_path, "Tatoeba", dataset, code, {"accuracy": sum(scores) / len(scores)},
                                     n, n, benchmark="tatoeba", corpus=conditions.SUBSET, revision=f"first {n} pairs",
                                     instruction=instruction, max_length=encoder.max_length)]
        per_query += [{"system": system, "model": model_path, "task": "Tatoeba", "dataset": dataset, "language": code,
                       "split": "test", "metric": "accuracy", "query_id": str(i), "score": v, "cluster": str(i)}
                      for i, v in enumerate(scores)]
    return pl.DataFrame(results, schema=EVAL_RESULTS), pl.DataFrame(per_query, schema=EVAL_PER_QUERY)
