"""Metric names, declared once: mteb's spelling (the ``metric`` column of every results and
reference table, values in percent) and the label each is shown with.

Eval writes :data:`RETRIEVAL_METRICS` for a retrieval task and :data:`BITEXT_METRICS` for bitext
mining (the passkey probe writes ``accuracy``); the report accepts any mteb retrieval name
(:func:`is_metric_name`), so tables from other mteb runs load too.
"""

from __future__ import annotations

NDCG_AT_10 = "ndcg_at_10"
NDCG_AT_100 = "ndcg_at_100"
RECALL_AT_10 = "recall_at_10"
RECALL_AT_100 = "recall_at_100"
MRR_AT_10 = "mrr_at_10"
F1 = "f1"
ACCURACY = "accuracy"
PRECISION = "precision"
RECALL = "recall"

# what eval measures per retrieval cell, and per bitext-mining cell (fractions of sentence pairs)
RETRIEVAL_METRICS = (NDCG_AT_10, RECALL_AT_100, RECALL_AT_10, MRR_AT_10, NDCG_AT_100)
BITEXT_METRICS = (F1, ACCURACY, PRECISION, RECALL)
# mteb's retrieval names are a prefix and a cutoff: ndcg_at_10, map_at_100, ...
RETRIEVAL_PREFIXES = ("ndcg_at_", "recall_at_", "map_at_", "mrr_at_", "precision_at_")

# how reports, plots, model cards and the CLI name a metric: NAME@K for any retrieval metric at a
# cutoff (the Parquet and CSV tables keep the keys)
_NAMES = {"ndcg": "nDCG", "recall": "Recall", "mrr": "MRR", "map": "MAP", "precision": "Precision", "f1": "F1",
          "accuracy": "accuracy"}


def is_metric_name(metric: str) -> bool:
    """A name the report knows: an mteb retrieval metric at some cutoff, or a bitext-mining score."""
    retrieval = metric.startswith(RETRIEVAL_PREFIXES) and metric.rsplit("_", 1)[-1].isdigit()
    return retrieval or metric in BITEXT_METRICS


def metric_label(metric: str) -> str:
    """How a metric key is written in HTML, Markdown and the CLI: ``ndcg_at_10`` -> nDCG@10,
    ``recall_at_100`` -> Recall@100, ``mrr_at_10`` -> MRR@10, ``f1`` -> F1."""
    name, at, k = metric.rpartition("_at_") if "_at_" in metric else (metric, "", "")
    return _NAMES.get(name, name) + (f"@{k}" if at else "")


METRIC_LABELS: dict[str, str] = {m: metric_label(m) for m in (*RETRIEVAL_METRICS, *BITEXT_METRICS)}
