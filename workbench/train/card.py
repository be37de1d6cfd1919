"""The model card (README.md) written next to the exported model: base model, recipe, schedule,
training data per language and family, the query format, and the eval table when the run has one."""

from __future__ import annotations

from typing import Any

import polars as pl

from workbench.config import TrainSection
from workbench.errors import WorkbenchError
from workbench.run import Run
from workbench.tables import EVAL_RESULTS


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _eval_section(run: Run) -> str:
    if not run.has_table("eval", "results"):
        return "Not evaluated when this model was exported. `workbench eval` / `workbench report` on the run add the numbers."
    try:
        results = run.read_table("eval", "results", EVAL_RESULTS).filter(pl.col("metric") == "ndcg_at_10")
    except WorkbenchError:  # a table from an older eval: the next eval sets it aside and writes a new one
        return "Not evaluated with this version of the workbench yet: `workbench eval` on the run adds the numbers."
    if results.height == 0:
        return "The run's eval table has no nDCG@10 rows."
    rows = [[r["system"], r["task"], r["dataset"], r["language"], r["split"], f"{r['value']:.1f}", r["n_queries"]]
            for r in results.sort(["task", "language", "system"]).iter_rows(named=True)]
    return ("nDCG@10 (percent) from the run's `eval/results.parquet` at export time, every system the run measured:\n\n"
            + _table(["system", "task", "dataset", "language", "split", "nDCG@10", "queries"], rows))


def _base_name(info) -> str:
    """A name a reader recognises: the embedded MiniLM by its hub name, else the folder's name (a
    sentence-transformers folder's inner ``_name_or_path`` names its pre-training base, not the model)."""
    from workbench.encoder import minilm_path

    try:
        if info.path.resolve() == minilm_path().resolve():
            return "sentence-transformers/all-MiniLM-L6-v2"
    except WorkbenchError:
        pass
    if info.path.name and info.path.name not in ("model", "models", "merged"):
        return info.path.name
    return info.name_or_path or str(info.path)


def model_card_text(tc: TrainSection, loaded, records: pl.DataFrame, schedule, stats: dict[str, Any], run: Run,
                    generator: str | None = None) -> str:
    """Markdown with a Hugging Face metadata header; every number comes from this run."""
    info = loaded.info
    base = _base_name(info)
    languages = sorted(set(records["language"].to_list()))
    library = "transformers" if info.is_decoder else "sentence-transformers"
    counts = (records.group_by(["language", "family"]).len().sort(["language", "family"]))
    per_language = records.group_by("language").len().sort("language")
    families = sorted(set(records["family"].to_list()))
    data_rows = []
    for lang in per_language.iter_rows(named=True):
        sub = counts.filter(pl.col("language") == lang["language"])
        by_family = {r["family"]: r["len"] for r in sub.iter_rows(named=True)}
        data_rows.append([lang["language"], lang["len"]] + [by_family.get(f, 0) for f in families])
    adapter = (f"LoRA r={tc.lora_r}, alpha={tc.lora_alpha}, dropout={tc.lora_dropout}, all linear layers"
               if tc.lora else "full fine-tuning")
    recipe = [
        ["base model", f"`{base}` ({info.model_type or 'unknown type'}, local folder `{info.path}`)"],
        ["adapter", adapter],
        ["loss", f"InfoNCE, temperature {tc.temperature}, in-batch negatives + one hard negative where the data has one"],
        ["pooling", f"{loaded.pooling}" + (" (EOS appended after truncation)" if loaded.add_eos else "")],
        ["max length", f"{tc.max_length} tokens"],
        ["optimizer", f"AdamW, lr {tc.learning_rate:g}, {min(tc.warmup_steps, schedule.steps)} warm-up steps then linear decay, weight decay {tc.weight_decay}"],
        ["batch", f"{schedule.batch_size} (global)"],
        ["steps / epochs", f"{schedule.steps} step{'s' if schedule.steps != 1 else ''} = {schedule.epochs:.2f} passes over {schedule.records} records"],
        ["back-end", f"{stats.get('deepspeed', tc.deepspeed)}, {stats.get('world_size', 1)} process(es), {stats.get('precision', tc.precision)}"],
        ["loss first → last", f"{stats.get('first_loss', float('nan')):.3f} → {stats.get('last_loss', float('nan')):.3f}"],
    ]
    if generator:
        recipe.append(["training data generator", f"`{generator}`"])
    warnings = "".join(f"\n> **Note:** {w}\n" for w in schedule.warnings)
    usage_st = (
        "```python\nfrom sentence_transformers import SentenceTransformer\n\n"
        "model = SentenceTransformer(\"PATH\")\n"
        "queries = model.encode([\"...\"], prompt_name=\"query\")  # or \"<mteb task>-query\"\n"
        "documents = model.encode([\"...\"])  # documents get no prompt\n```\n"
    )
    usage_hf = (
        "This is a decoder: load it with `transformers.AutoModel`, tokenise with `max_length - 1` and append the "
        "EOS id after truncation, left padding, take the last token's hidden state and L2-normalise "
        "(`workbench.encoder.tokenize` and `pool` do exactly that; `workbench eval --model PATH` uses them).\n"
    )
    header = "\n".join([
        "---",
        f"library_name: {library}",
        "pipeline_tag: sentence-similarity" if not info.is_decoder else "pipeline_tag: feature-extraction",
        "tags:", "- sentence-transformers" if not info.is_decoder else "- embeddings", "- workbench",
        "language:", *[f"- {code}" for code in languages],
        "---",
    ])
    return f"""{header}

# Embedder fine-tuned from `{base}` on synthetic data

Trained by the workbench's train stage on the accepted examples of run `{run.root.name}`
(E5-mistral recipe, Wang et al. 2024).
{warnings}
## Recipe

{_table(["item", "value"], recipe)}

## Query format

Queries: `Instruct: {{instruction}}\\nQuery: {{text}}` (the instruction describes the task); documents
are encoded plain. The sentence-transformers `prompts` (and `workbench_encoder.json`'s `prompts`) hold
one ready query prompt per evaluation task, keyed `<mteb task name>-query`, and a generic `query` prompt.

{usage_st if not info.is_decoder else usage_hf}
## Training data

{schedule.records} records with weight > 0 ({records.height} built), per language and task family:

{_table(["language", "records", *families], data_rows)}

## Evaluation

{_eval_section(run)}
"""
