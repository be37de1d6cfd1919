"""Declared schemas of every Parquet table in a run directory, checked on write and on read.

One schema per stage output; stages never invent columns on the fly. A table that does not match
its schema is reported as one line naming the file, the column and the problem.
"""

from __future__ import annotations

import polars as pl

from workbench.families import EXAMPLE_FIELDS, PLACEHOLDER_COLUMNS

Schema = dict[str, pl.DataType]

# plan/<lang>.parquet: one row per generation slot.
PLAN: Schema = {
    "slot_id": pl.Utf8(),
    "language": pl.Utf8(),
    "family": pl.Utf8(),
    "seed": pl.Int64(),
    **{column: pl.Utf8() for column in PLACEHOLDER_COLUMNS},
}

# tasks/<lang>.parquet: one row per brainstormed task (generate, step 1).
TASKS: Schema = {
    "language": pl.Utf8(),
    "family": pl.Utf8(),
    "seed": pl.Int64(),
    "task_index": pl.Int64(),
    "task": pl.Utf8(),
    "model": pl.Utf8(),
}

# generated/<lang>.parquet: one row per planned slot (generate, step 2).
GENERATED: Schema = {
    "slot_id": pl.Utf8(),
    "language": pl.Utf8(),
    "family": pl.Utf8(),
    "task": pl.Utf8(),
    **{column: pl.Utf8() for column in PLACEHOLDER_COLUMNS},
    **{name: pl.Utf8() for name in EXAMPLE_FIELDS},
    "status": pl.Utf8(),  # ok | failed
    "error": pl.Utf8(),
    "raw_response": pl.Utf8(),
    "model": pl.Utf8(),
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),
    "attempts": pl.Int64(),
    "created_at": pl.Utf8(),
}


def conform(df: pl.DataFrame, schema: Schema, where: str) -> pl.DataFrame:
    """Return ``df`` with exactly the schema's columns, in order, cast to the declared types.

    Missing columns or columns that cannot be cast raise :class:`TableError` naming ``where``.
    Extra columns are an error too: a table carries what its schema declares and nothing else.
    """
    from workbench.errors import TableError, first_line

    # columns added after tables were first written (all nullable): an older table reads with nulls
    df = df.with_columns(pl.lit(None, dtype=schema[name]).alias(name) for name in ADDED_LATER
                         if name in schema and name not in df.columns)
    missing = [name for name in schema if name not in df.columns]
    if missing:
        raise TableError(
            f"missing column(s) {', '.join(missing)}",
            where=where,
            fix="the table was not written by this stage or by this version of the workbench",
        )
    extra = [name for name in df.columns if name not in schema]
    if extra:
        raise TableError(f"undeclared column(s) {', '.join(extra)}", where=where)
    try:
        return df.select([pl.col(name).cast(dtype, strict=True) for name, dtype in schema.items()])
    except pl.exceptions.PolarsError as err:
        first = first_line(err, 400)
        raise TableError(f"column types do not match the declared schema: {first}", where=where) from None


# --- filter / audit --------------------------------------------------------------------------
# One LID vote: which member said what about which field of the example.
LID_VOTE = pl.Struct({"field": pl.Utf8(), "member": pl.Utf8(), "label": pl.Utf8(), "prob": pl.Float64()})

# accepted/<lang>.parquet and rejected/<lang>.parquet: generated rows with status ok, plus the
# filter's verdict. ``reasons`` is empty for accepted rows; codes look like "wrong_language:S2"
# (see workbench/filter/rules.py REASONS). ``lid_language`` is what the ensemble saw in the main
# field; ``lid_support`` the lowest vote share for the expected language over the voted fields.
FILTERED: Schema = {
    **GENERATED,
    "reasons": pl.List(pl.Utf8()),
    "lid_language": pl.Utf8(),
    "lid_support": pl.Float64(),
    "lid_votes": pl.List(LID_VOTE),
    # accepted rows only: the accept_also language (languages/<code>.toml) the LID majority named
    # instead of the row's language (bs accepted as hr); null for a plain accept
    "lid_accepted_as": pl.Utf8(),
}
ACCEPTED: Schema = FILTERED
REJECTED: Schema = FILTERED

# audit/summary.parquet: one row per language. The report stage reads these core columns.
AUDIT_SUMMARY: Schema = {
    "language": pl.Utf8(),
    "planned": pl.Int64(),
    "generated": pl.Int64(),  # rows with status ok
    "failed": pl.Int64(),  # rows with status failed (never reached the filter)
    "accepted": pl.Int64(),
    "rejected": pl.Int64(),
    "acceptance_rate": pl.Float64(),  # accepted / generated
    "top_reject_reasons": pl.Utf8(),  # "reason:count; reason:count" most frequent first
    "top_lid_confusions": pl.Utf8(),  # "lang:count; ..." languages the LID ensemble saw instead
    "exact_dup_rate": pl.Float64(),
    "near_dup_rate": pl.Float64(),
    "distinct_tasks": pl.Int64(),
    "truncated": pl.Int64(),  # slots failed because the answer was cut at max_tokens
    "distinct_2": pl.Float64(),  # lexical diversity of the main text field
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),
}


# --- eval ------------------------------------------------------------------------------------
# The long-context probe (task "passkey", workbench/eval/passkey.py) measures one dataset at many
# cells: these columns are part of a row's key in eval/results.parquet and eval/per_query.parquet,
# null for every other task.
EVAL_CELL: Schema = {
    "context_tokens": pl.Int64(),  # document length in the evaluated encoder's tokens (no special tokens)
    "needle_depth": pl.Float64(),  # where the needle sits, percent of the document (0 = start)
    "rope_theta": pl.Float64(),  # RoPE base override the encoder ran with (null: the model's own)
    "sliding_window": pl.Int64(),  # attention window override (null: the model's own)
}
EVAL_CELL_KEY: tuple[str, ...] = tuple(EVAL_CELL)
# What a passkey row was measured on, beside its key (null for other tasks).
EVAL_PASSKEY_FACTS: Schema = {
    "context_chars_median": pl.Float64(),  # median characters of that language's documents at this length
    "context_words_median": pl.Float64(),  # median whitespace words (null for scripts written without spaces)
    "needle_template": pl.Utf8(),  # "language: <provenance>" or "neutral ({name}: {passkey})"
    "needle_names": pl.Utf8(),  # "<script>: <provenance>" or "romanized (synthetic)"
}

# eval/results.parquet: one row per (system, task, language, metric). Values are in percent
# (nDCG@10 = 40.6 means 0.406) so they compare directly with published tables.
EVAL_RESULTS: Schema = {
    "system": pl.Utf8(),  # short name shown in reports: "bm25", "minilm", "minilm-ft", ...
    "model": pl.Utf8(),  # model path or identifier ("bm25s" for BM25)
    "task": pl.Utf8(),  # "MIRACLRetrieval", "MIRACLRetrievalHardNegatives", "XQuADRetrieval", ...
    "dataset": pl.Utf8(),  # what was evaluated, e.g. "miracl-yo-dev-full", "xquad-de"
    "language": pl.Utf8(),
    "split": pl.Utf8(),
    "metric": pl.Utf8(),  # "ndcg_at_10", "recall_at_100", ...
    "value": pl.Float64(),
    "n_queries": pl.Int64(),
    "n_docs": pl.Int64(),
    "source": pl.Utf8(),  # "measured" here; reference rows carry their paper / MTEB source
    "created_at": pl.Utf8(),
    # The conditions the number was measured under (vocabularies in workbench/conditions.py); the
    # report compares numbers only where they match and never reads them out of the dataset label.
    "benchmark": pl.Utf8(),  # miracl | xquad | beir | tatoeba | passkey (eval/targets.py EVAL_TASKS)
    "task_kind": pl.Utf8(),  # retrieval | bitext-mining | passkey
    "corpus": pl.Utf8(),  # full | hard-negatives-v1 | hard-negatives-v2 | subset | local
    "revision": pl.Utf8(),  # hub revision, or sha256:<12 hex> of the local files
    "instruction": pl.Utf8(),  # the exact query instruction, "prefix:<text>", or "none"
    "instruction_source": pl.Utf8(),  # task prompt | instruction table | model prompt | fixed prefix | none
    "max_length": pl.Int64(),  # tokens per text (null for BM25)
    "regime": pl.Utf8(),  # training regime on this benchmark for this language (conditions.REGIMES)
    "contract_from": pl.Utf8(),  # the model folder whose contract the weights ran under (null: their own)
    "training_seed": pl.Int64(),  # the seed a workbench-trained model was trained with (null: not trained here)
    "seed_group": pl.Utf8(),  # the system all training seeds of one configuration share (= system otherwise)
    **EVAL_CELL,
    **EVAL_PASSKEY_FACTS,
}
# The condition columns EVAL_RESULTS carries since they were introduced: a table without them was
# written by an older eval and is refused with one line (re-run eval), never guessed from labels.
EVAL_CONDITION_COLUMNS = ("benchmark", "task_kind", "corpus", "revision", "instruction", "instruction_source",
                          "max_length", "regime", "contract_from", "training_seed", "seed_group")

# eval/per_query.parquet: the per-query (per sentence pair, for bitext mining) scores behind each
# aggregate in eval/results.parquet, so reports can give bootstrap intervals and paired tests
# (mteb's result files hold only averages). Same key as EVAL_RESULTS plus ``query_id``; ``score``
# is in percent like ``value`` (bitext mining: 100 if the right translation was retrieved, else 0),
# and the mean over a group's rows equals that group's aggregate ``value``.
EVAL_PER_QUERY: Schema = {
    "system": pl.Utf8(),
    "model": pl.Utf8(),
    "task": pl.Utf8(),
    "dataset": pl.Utf8(),
    "language": pl.Utf8(),
    "split": pl.Utf8(),
    "metric": pl.Utf8(),
    "query_id": pl.Utf8(),
    "score": pl.Float64(),
    # queries that share a relevant passage (XQuAD: the questions on one paragraph) share a cluster;
    # intervals resample clusters, not queries, so dependent queries are not counted as independent
    "cluster": pl.Utf8(),
    **EVAL_CELL,
}


# Nullable columns added to existing tables: an eval table written before them reads with nulls
# (conform adds them), so an older run's results stay readable.
ADDED_LATER: frozenset[str] = frozenset({*EVAL_CELL, *EVAL_PASSKEY_FACTS})


# --- report ----------------------------------------------------------------------------------
# The condition columns every measured and reference row of the report carries (workbench/conditions.py).
_CONDITIONS: Schema = {
    "benchmark": pl.Utf8(),
    "task_kind": pl.Utf8(),
    "corpus": pl.Utf8(),  # full | hard-negatives-v1 | hard-negatives-v2 | subset | local: comparable only within one
    "split": pl.Utf8(),
    "revision": pl.Utf8(),
    "instruction": pl.Utf8(),
    "max_length": pl.Int64(),
    "regime": pl.Utf8(),  # per language: trained on this benchmark's training split, zero-shot, lexical, not stated
}
# report/scores.parquet: one row per (MIRACL language, system or reference point and source, metric).
REPORT_SCORES: Schema = {
    "language": pl.Utf8(),
    "tier": pl.Utf8(),  # registry tier: high | mid | low
    "miracl_low_resource": pl.Boolean(),
    "system": pl.Utf8(),  # measured system name, or reference label ("BM25 Lucene (published)")
    "kind": pl.Utf8(),  # measured | paper | mteb
    "model": pl.Utf8(),
    "task": pl.Utf8(),
    "dataset": pl.Utf8(),
    "metric": pl.Utf8(),
    "value": pl.Float64(),  # percent
    "n_queries": pl.Int64(),
    "n_docs": pl.Int64(),
    "provenance": pl.Utf8(),  # where the number comes from, in words
    **_CONDITIONS,
    "source": pl.Utf8(),  # a reference's source key (sources.toml), "measured" otherwise
    "version": pl.Utf8(),  # the paper version / mteb version a reference comes from
    "disputed": pl.Boolean(),  # another source gives this model, corpus, language and metric > 1 point apart
    "shown": pl.Boolean(),  # the row a table cell shows for its label (the preferred source)
    "other_sources": pl.Utf8(),  # the other sources' values for the same number, in words
}
# report/gaps.parquet: one row per (language, measured system, metric, reference point), comparable or not.
REPORT_GAPS: Schema = {
    "language": pl.Utf8(),
    "tier": pl.Utf8(),
    "miracl_low_resource": pl.Boolean(),
    "system": pl.Utf8(),
    "metric": pl.Utf8(),
    "value": pl.Float64(),
    "reference": pl.Utf8(),
    "reference_kind": pl.Utf8(),
    "reference_value": pl.Float64(),
    "gap": pl.Float64(),  # reference_value - value, in points (positive = behind); null unless comparable
    "corpus": pl.Utf8(),  # the corpus variant of the system's number
    "reference_regime": pl.Utf8(),
    "comparable": pl.Boolean(),  # every condition matches and the reference is not disputed
    "differs": pl.Utf8(),  # the conditions that differ, in words (why no gap), or "disputed: ..."
}
# report/groups.parquet: per language group, the mean score and mean gap to the primary reference,
# over the languages where the gap is comparable (descriptive: the tier question is in tiers.parquet).
REPORT_GROUPS: Schema = {
    "group": pl.Utf8(),  # "high tier", "mid tier", "low tier", "MIRACL low-resource", "all"
    "system": pl.Utf8(),
    "metric": pl.Utf8(),
    "reference": pl.Utf8(),
    "n_languages": pl.Int64(),
    "languages": pl.Utf8(),  # comma-separated codes the means are over
    "mean_value": pl.Float64(),
    "mean_reference": pl.Float64(),
    "mean_gap": pl.Float64(),
}
# report/tiers.parquet: the tier question per benchmark, on its primary metric (fixed in advance):
# high-tier minus low-tier mean score of the focus system, two-level bootstrap interval.
REPORT_TIERS: Schema = {
    "benchmark": pl.Utf8(),
    "task": pl.Utf8(),
    "corpus": pl.Utf8(),
    "metric": pl.Utf8(),
    "system": pl.Utf8(),
    "n_high": pl.Int64(),  # languages per tier with per-query scores
    "n_low": pl.Int64(),
    "languages_high": pl.Utf8(),
    "languages_low": pl.Utf8(),
    "difference": pl.Float64(),  # mean(high) - mean(low), points: positive = the low tier trails
    "ci_low": pl.Float64(),  # 95% two-level bootstrap interval (null when it cannot be said)
    "ci_high": pl.Float64(),
    "answer": pl.Utf8(),  # yes | no | cannot say
    "why": pl.Utf8(),
}
# report/data.parquet: per MIRACL language, the synthetic data behind the model (from the audit).
REPORT_DATA: Schema = {
    "language": pl.Utf8(),
    "tier": pl.Utf8(),
    "miracl_low_resource": pl.Boolean(),
    "has_synthetic_data": pl.Boolean(),
    "generated": pl.Int64(),
    "accepted": pl.Int64(),
    "acceptance_rate": pl.Float64(),
    "top_reject_reasons": pl.Utf8(),
    "top_lid_confusions": pl.Utf8(),
    "cost_usd": pl.Float64(),
    "cost_per_generated_usd": pl.Float64(),
    "focus_ndcg_at_10": pl.Float64(),
    "primary_gap_ndcg_at_10": pl.Float64(),  # null where no comparable primary reference exists
    "note": pl.Utf8(),
}
# report/measured.parquet: one row per number this run measured, with its 95% interval (null without
# per-query scores) and, for a system trained with several seeds, the spread across them.
REPORT_MEASURED: Schema = {
    "task": pl.Utf8(),
    "dataset": pl.Utf8(),
    "language": pl.Utf8(),
    "tier": pl.Utf8(),
    "metric": pl.Utf8(),
    "system": pl.Utf8(),
    "model": pl.Utf8(),
    **_CONDITIONS,
    "contract_from": pl.Utf8(),
    "value": pl.Float64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "method": pl.Utf8(),  # how the interval was computed (stats.py)
    "n_scored": pl.Int64(),  # queries (sentence pairs) behind the interval
    "n_clusters": pl.Int64(),  # independent units resampled (XQuAD: paragraphs)
    "n_queries": pl.Int64(),
    "n_docs": pl.Int64(),
    "n_seeds": pl.Int64(),  # training seeds of this system measured here (1 for untrained systems)
    "seed_values": pl.Utf8(),  # "13: 68.3; 14: 66.9"
    "seed_spread": pl.Float64(),  # max - min across seeds, points
}
# report/comparisons.parquet: system B against system A on the same queries (paired, Holm across languages).
REPORT_COMPARISONS: Schema = {
    "task": pl.Utf8(),
    "dataset": pl.Utf8(),
    "language": pl.Utf8(),
    "tier": pl.Utf8(),
    "split": pl.Utf8(),
    "metric": pl.Utf8(),
    "system_a": pl.Utf8(),
    "system_b": pl.Utf8(),
    "cause": pl.Utf8(),  # what differs between A and B: training data | input format | system | several
    "differs": pl.Utf8(),  # the conditions that differ besides the weights, in words
    "n": pl.Int64(),  # queries both systems scored
    "n_unpaired": pl.Int64(),  # queries only one of them scored (left out of the test)
    "n_clusters": pl.Int64(),
    "value_a": pl.Float64(),
    "value_b": pl.Float64(),
    "delta": pl.Float64(),  # value_b - value_a, points
    "ci_low": pl.Float64(),  # interval of delta at the level Holm tested it at (``confidence``)
    "ci_high": pl.Float64(),
    "confidence": pl.Float64(),
    "method": pl.Utf8(),
    "p_value": pl.Float64(),  # from the same procedure as the interval
    "p_holm": pl.Float64(),  # Holm-adjusted within (system pair, task, metric) across languages
    "holm_family_size": pl.Int64(),
    "significant": pl.Boolean(),  # p_holm < 0.05, i.e. the shown interval excludes 0
    "mdd": pl.Float64(),  # minimum detectable difference at that level with 80% power, points
    "seed_deltas": pl.Utf8(),  # training data pairs: the same difference for every training seed
}
# report/passkey.parquet: the passkey probe per system setting, language and length: accuracy over all
# depths (needle_depth null) and per depth, each the mean of per-query 0/100 outcomes, with its 95% Clopper-Pearson
# interval (exact for a proportion, so it stays honest near 0 and 100).
REPORT_PASSKEY: Schema = {
    "system": pl.Utf8(),
    "model": pl.Utf8(),
    "dataset": pl.Utf8(),
    "language": pl.Utf8(),
    "tier": pl.Utf8(),
    "rope_theta": pl.Float64(),
    "sliding_window": pl.Int64(),
    "context_tokens": pl.Int64(),
    "needle_depth": pl.Float64(),  # null: every depth pooled
    "accuracy": pl.Float64(),  # percent
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "n_queries": pl.Int64(),
    "context_chars_median": pl.Float64(),
    "context_words_median": pl.Float64(),
    "needle_template": pl.Utf8(),
    "needle_names": pl.Utf8(),
    **_CONDITIONS,  # a row pools only per-query scores whose results rows agree on every one of these
}
# report/compare.parquet (compare mode): per language, task and metric, B minus A; intervals and the paired
# test as in REPORT_MEASURED / REPORT_COMPARISONS where both sides have per-query scores (else null).
REPORT_COMPARE: Schema = {
    "language": pl.Utf8(),
    "tier": pl.Utf8(),
    "miracl_low_resource": pl.Boolean(),
    "task": pl.Utf8(),
    "dataset": pl.Utf8(),
    "metric": pl.Utf8(),
    "n_docs": pl.Int64(),
    "label_a": pl.Utf8(),
    "value_a": pl.Float64(),
    "ci_low_a": pl.Float64(),  # 95% interval of value_a
    "ci_high_a": pl.Float64(),
    "label_b": pl.Utf8(),
    "value_b": pl.Float64(),
    "ci_low_b": pl.Float64(),
    "ci_high_b": pl.Float64(),
    "delta": pl.Float64(),  # value_b - value_a, in points
    "delta_ci_low": pl.Float64(),  # interval of delta at the level Holm tested it at (``confidence``)
    "delta_ci_high": pl.Float64(),
    "confidence": pl.Float64(),
    "method": pl.Utf8(),
    "n": pl.Int64(),  # queries both sides scored
    "n_clusters": pl.Int64(),
    "p_holm": pl.Float64(),  # Holm within (task, metric) across languages, as in REPORT_COMPARISONS
    "holm_family_size": pl.Int64(),
    "significant": pl.Boolean(),
    "mdd": pl.Float64(),  # minimum detectable difference (80% power) at that level, points
}


# --- train -----------------------------------------------------------------------------------
# train/records.parquet: one row per training triple built from an accepted example.
# ``query`` already carries the instruction ("Instruct: ...\nQuery: ..."); symmetric families (sts,
# bitext) carry it on the positive and negative as well. ``negative`` is null where the family has
# no hard negative (short_short, long_long): those rows train on in-batch negatives only.
TRAIN_RECORDS: Schema = {
    "record_id": pl.Utf8(),  # "<slot_id>"
    "slot_id": pl.Utf8(),
    "language": pl.Utf8(),
    "family": pl.Utf8(),
    "instruction": pl.Utf8(),
    "query": pl.Utf8(),
    "positive": pl.Utf8(),
    "negative": pl.Utf8(),
    "symmetric": pl.Boolean(),
    "weight": pl.Float64(),  # sampling weight: language weight x family weight
}

# train/log.parquet: one row per logged optimizer step.
TRAIN_LOG: Schema = {
    "step": pl.Int64(),
    "loss": pl.Float64(),
    "learning_rate": pl.Float64(),
    "seconds": pl.Float64(),  # wall time since training started
    "tokens": pl.Int64(),  # non-padding tokens processed in this step (all ranks)
}
