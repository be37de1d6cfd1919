"""Export a run's accepted data as JSONL with a Hugging Face dataset card; push data or model to the Hub.

Reads ``accepted/<lang>.parquet`` and ``rejected/<lang>.parquet`` (ACCEPTED/REJECTED), the run's
``run.toml`` (generator, filter policy) and, for the model, the folder ``train`` recorded in the
manifest. Writes ``<out>/data/<lang>.jsonl`` — one kept example per line: ``slot_id``, ``language``,
``family``, ``task``, ``model`` and the family's own fields (``user_query``, ``positive_document``,
…) — and ``<out>/README.md``, a dataset card in the Hub's format (YAML header with languages,
licence, task categories and one config per language, so ``datasets.load_dataset(out, "sw")``
reads it). The run itself is not changed.

    workbench export runs/demo                                   # -> runs/demo/export/dataset/
    workbench export runs/demo --push-to-hub me/e5-synthetic     # also upload (token: HF_TOKEN)
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from workbench.config import RunConfig
from workbench.errors import WorkbenchError, first_line
from workbench.families import FAMILIES
from workbench.languages import Registry
from workbench.run import Run, atomic_write_bytes, read_parquet
from workbench.tables import ACCEPTED, REJECTED

TASK_CATEGORIES = ["sentence-similarity", "text-retrieval", "text-classification", "translation"]


def export_dataset(run: Run, config: RunConfig, registry: Registry, out: Path) -> dict[str, Any]:
    """Write the JSONL files and the dataset card; returns per-language counts and the models seen."""
    codes = run.table_languages("accepted")
    if not codes:
        raise WorkbenchError("no accepted/ tables to export", where=str(run.root),
                             fix="run 'workbench filter RUN' first")
    counts: dict[str, dict[str, int]] = {}
    models: Counter[str] = Counter()
    families: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for code in codes:
        accepted = read_parquet(run.table_path("accepted", code), ACCEPTED)
        rejected_path = run.table_path("rejected", code)
        rejected = read_parquet(rejected_path, REJECTED) if rejected_path.is_file() else None
        lines = [json.dumps(_record(row), ensure_ascii=False) for row in accepted.iter_rows(named=True)]
        atomic_write_bytes(out / "data" / f"{code}.jsonl", ("\n".join(lines) + "\n" if lines else "").encode())
        counts[code] = {"accepted": accepted.height, "rejected": 0 if rejected is None else rejected.height}
        models.update(m for m in accepted["model"].to_list() if m)
        families.update(accepted["family"].to_list())
        if rejected is not None and rejected.height:
            reasons.update(r.split(":")[0] for r in rejected["reasons"].explode().drop_nulls().to_list())
    card = dataset_card(config, registry, counts, models, families, reasons)
    atomic_write_bytes(out / "README.md", card.encode())
    return {"languages": counts, "models": dict(models), "out": str(out)}


def _record(row: dict[str, Any]) -> dict[str, Any]:
    family = FAMILIES[row["family"]]
    record = {key: row[key] for key in ("slot_id", "language", "family", "task", "model")}
    record.update({name: row[name] for name in family.fields})
    return record


def _size_category(total: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if total < limit:
            return name
    return "1M<n<10M"


def dataset_card(config: RunConfig, registry: Registry, counts: dict[str, dict[str, int]], models: Counter[str],
                 families: Counter[str], reasons: Counter[str]) -> str:
    """The README.md of the exported dataset: Hub YAML header, then counts, generator, filter, licence."""
    from huggingface_hub import DatasetCardData

    import tomli_w

    total = sum(c["accepted"] for c in counts.values())
    data = DatasetCardData(
        language=sorted(counts),
        license="other",
        license_name="generated-text",
        pretty_name=f"{config.run.name}: synthetic E5-style embedding data",
        size_categories=[_size_category(total)],
        task_categories=TASK_CATEGORIES,
        tags=["synthetic", "embeddings", "e5", "multilingual"],
        configs=[{"config_name": "all", "data_files": "data/*.jsonl", "default": True}]
        + [{"config_name": code, "data_files": f"data/{code}.jsonl"} for code in sorted(counts)],
    )
    rows = []
    for code in sorted(counts):
        accepted, rejected = counts[code]["accepted"], counts[code]["rejected"]
        name = registry.get(code).name if code in registry else code
        share = f"{accepted / (accepted + rejected):.0%}" if accepted + rejected else "—"
        rows.append(f"| {code} | {name} | {accepted:,} | {rejected:,} | {share} |")
    generators = ", ".join(f"`{m}` ({n:,})" for m, n in models.most_common()) or "unknown"
    family_list = ", ".join(f"{name} {n:,}" for name, n in sorted(families.items()))
    reason_list = ", ".join(f"{name} {n:,}" for name, n in reasons.most_common()) or "none"
    policy = tomli_w.dumps({"filter": config.filter.model_dump(mode="json", exclude_none=True)}).strip()
    fields = "; ".join(f"{name}: {', '.join(f.fields)}" for name, f in FAMILIES.items())
    return f"""---
{data.to_yaml()}
---

# {config.run.name}: synthetic embedding training data

Synthetic examples in the six task families of *Improving Text Embeddings with Large Language
Models* (Wang et al. 2024), generated per language and kept by a language-ID, script, length and
duplicate filter. {total:,} examples in {len(counts)} language(s).

## Languages

| code | language | examples | rejected | kept |
|---|---|---:|---:|---:|
{chr(10).join(rows)}

Per family: {family_list or "none"}.

## Files and fields

`data/<code>.jsonl`, one example per line: `slot_id`, `language`, `family`, `task` (the brainstormed
task, where the family has one), `model` (the generator), and the family's fields ({fields}).
Load one language with `datasets.load_dataset(PATH, "<code>")`, all with `load_dataset(PATH)`.

## Generator

{generators} (examples per model). Prompts follow the paper's templates, one per family.

## Filter policy

An example is kept only if every field carries text (letters, not a number, a bare `{...}` or
`N/A`), is written in the expected script and is within the length bounds of its field; every field
of 20 or more letters was voted to be in the expected language by a clear majority of the
language-ID ensemble, and shorter fields were dropped when the vote named another language, English
or a confusable neighbour at least as often as the expected one; and it is not a near-duplicate. Rejected examples are not in this export; their reasons were: {reason_list}.
The exact settings:

```toml
{policy}
```

## Licence

These texts were written by a language model ({", ".join(models) or "unknown"}). Their terms of use
follow that model's licence or the provider's terms (for example, OpenAI's terms for GPT outputs),
so this card says `license: other`: check those terms before redistributing or training a
commercial model on the data. The texts may contain errors, invented facts and biases of the
generator; the filter checks language and form, not truth.
"""


def trained_model_dir(run: Run) -> Path:
    """The model folder the train stage recorded (merged export, else the adapter)."""
    entry = run.stage_entry("train") or {}
    stats = entry.get("stats", {})
    folder = stats.get("export") or stats.get("adapter")
    if entry.get("status") != "complete" or not folder or not Path(folder).is_dir():
        raise WorkbenchError("no trained model in this run", where=str(run.root / "train"),
                             fix="run 'workbench train RUN' first")
    return Path(folder)


def push_to_hub(folder: Path, repo_id: str, repo_type: str, *, private: bool = False) -> str:
    """Create ``repo_id`` on the Hub if needed and upload ``folder``; returns the commit URL.

    The token comes from ``HF_TOKEN`` (or a saved ``hf auth login``), the host from
    ``HF_ENDPOINT`` (default https://huggingface.co). Failures are one line.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise WorkbenchError(f"'{repo_id}' is not a Hub repository id", where="--push-to-hub",
                             fix="give NAMESPACE/NAME, e.g. my-org/e5-synthetic-sw")
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                                   commit_message="workbench export")
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        fix = ("set HF_TOKEN to a token with write access" if status in (401, 403)
               else "check the repository id and your access to it")
        raise WorkbenchError(f"Hub upload failed ({status}: {first_line(err, 160)})",
                             where=repo_id, fix=fix) from None
    except ValueError as err:  # the Hub's validate-yaml refused the card's header
        raise WorkbenchError(f"the Hub rejected README.md ({str(err).splitlines()[-1][:160]})", where=repo_id,
                             fix="fix the card's YAML header") from None
    except _transport_errors() as err:  # connection refused, DNS, TLS: no HTTP answer at all
        raise WorkbenchError(f"cannot reach the Hub ({type(err).__name__})", where=api.endpoint,
                             fix="check the network, or HF_ENDPOINT if you set it") from None
    return str(getattr(commit, "commit_url", commit))


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exceptions of whichever HTTP client this huggingface_hub uses."""
    import importlib

    found: list[type[BaseException]] = [OSError]
    for module, name in (("httpx", "TransportError"), ("httpx2", "TransportError"), ("requests", "ConnectionError")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)
