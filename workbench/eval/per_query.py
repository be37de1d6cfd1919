"""Per-query scores behind the aggregates in ``eval/results.parquet`` -> ``eval/per_query.parquet``.

mteb's result files hold only averages; intervals and paired tests need one score per query.

* Retrieval: recomputed from the rankings mteb saved (its predictions file, the very input of its
  own scoring) and the qrels it scored against, with ``pytrec_eval`` as mteb calls it (nDCG@k =
  ``ndcg_cut_k``, Recall@k = ``recall_k``) and MRR@k as mteb computes it (reciprocal rank of the
  first relevant passage in the top k, ties broken by doc id descending). Each query set is the one
  mteb averages over, so a group's mean is its aggregate (up to mteb's rounding to 5 decimals).
* Bitext mining: mteb's nearest neighbour of each sentence is right (100) or wrong (0); the mean
  is mteb's accuracy. mteb's F1 is a class-weighted F1 over neighbour labels, not a mean over
  pairs, so it has no per-pair rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytrec_eval

from workbench.metrics import NDCG_AT_10, NDCG_AT_100, RECALL_AT_10, RECALL_AT_100

PYTREC_MEASURES = {NDCG_AT_10: "ndcg_cut_10", NDCG_AT_100: "ndcg_cut_100", RECALL_AT_10: "recall_10", RECALL_AT_100: "recall_100"}


def _reciprocal_rank(ranking: Mapping[str, float], relevant: set[str], k: int) -> float:
    ordered = sorted(ranking.items(), key=lambda item: (item[1], item[0]), reverse=True)[:k]
    return next((1.0 / rank for rank, (doc, _) in enumerate(ordered, 1) if doc in relevant), 0.0)


def retrieval_scores(
    rankings: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: tuple[str, ...],
) -> dict[str, dict[str, float]]:
    """metric -> query id -> score in [0, 1], over the queries mteb averages each metric over."""
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items() if docs}
    run = {q: {d: float(s) for d, s in docs.items()} for q, docs in rankings.items() if q in judged}
    cutoffs = sorted({int(m.rsplit("_", 1)[1]) for m in metrics if m in PYTREC_MEASURES})
    measures = {f"{kind}.{','.join(map(str, cutoffs))}" for kind in ("ndcg_cut", "recall")} if cutoffs else set()
    evaluated = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(run) if measures else {}
    out: dict[str, dict[str, float]] = {}
    for metric in metrics:
        if metric in PYTREC_MEASURES:
            out[metric] = {q: float(s[PYTREC_MEASURES[metric]]) for q, s in evaluated.items()}
        elif metric.startswith("mrr_at_"):
            k = int(metric.rsplit("_", 1)[1])
            out[metric] = {
                q: _reciprocal_rank(docs, {d for d, r in judged[q].items() if r > 0}, k) for q, docs in run.items()
            }
        else:
            raise ValueError(f"no per-query definition for metric {metric!r}")
    return out


def bitext_scores(neighbours: list[Mapping[str, float]]) -> dict[str, float]:
    """Sentence index -> 1.0 when its nearest neighbour is its own translation (gold i -> i), else 0.0."""
    return {str(i): float(int(hit["corpus_id"]) == i) for i, hit in enumerate(neighbours)}


__all__ = ["PYTREC_MEASURES", "bitext_scores", "retrieval_scores"]
