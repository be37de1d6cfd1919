"""Export a run's accepted data as JSONL with a Hugging Face dataset card; push data or model to the Hub.

Reads ``accepted/<lang>.parquet`` and ``rejected/<lang>.parquet`` (ACCEPTED/REJECTED), the run's
``run.toml`` (generator, filter policy) and, for the model, the folder ``train`` recorded in the
manifest. Writes ``<out>/data/<family>/<lang>.jsonl`` — one kept example per line: ``slot_id``,
``language``, ``family``, ``task``, ``model``, the family's own fields (``user_query``,
``positive_document``, …) and, for cross-lingual families (bitext), ``target_language`` — and
``<out>/README.md``, a dataset card in the Hub's format whose YAML header lists one config per
family (that family's fields only) plus ``all`` (the default: every row, one schema in which the
fields of other families are null), each with its declared features, so
``datasets.load_dataset(out)`` and ``load_dataset(out, "bitext")`` both load. Languages and
families without accepted rows get no file and no config; the card says which. The run itself is
not changed.

    workbench export runs/demo                                   # -> runs/demo/export/dataset/
    workbench export runs/demo --push-to-hub me/e5-synthetic     # also upload (token: HF_TOKEN)
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from workbench.config import RunConfig
from workbench.errors import WorkbenchError, first_line
from workbench.families import EXAMPLE_FIELDS, FAMILIES, FAMILY_NAMES
from workbench.languages import Registry
from workbench.run import Folder, Run, atomic_write_bytes, read_parquet
from workbench.tables import ACCEPTED, REJECTED

TASK_CATEGORIES = ["sentence-similarity", "text-retrieval", "text-classification", "translation"]
DEFAULT_CONFIG = "all"  # every row, the union of the families' fields (null where a family has none)
# columns every row carries, before the family's own fields; target_language only where a family has one
COMMON_FIELDS = ("slot_id", "language", "target_language", "family", "task", "model")


def family_columns(name: str) -> list[str]:
    """The columns of one family's rows, in file order."""
    family = FAMILIES[name]
    common = [c for c in COMMON_FIELDS if c != "target_language" or family.cross_lingual]
    return common + list(family.fields)


def all_columns() -> list[str]:
    """The columns of the default config: every common field, then every family's fields."""
    return list(COMMON_FIELDS) + [f for f in EXAMPLE_FIELDS if any(f in fam.fields for fam in FAMILIES.values())]


def export_dataset(run: Run, config: RunConfig, registry: Registry, out: Path) -> dict[str, Any]:
    """Write the JSONL files and the dataset card; returns per-language counts, the languages left out
    (no accepted rows), the configs the card lists and the models seen."""
    codes = run.table_languages(Folder.ACCEPTED)
    if not codes:
        raise WorkbenchError(f"no {Folder.ACCEPTED}/ tables to export", where=str(run.root),
                             fix="run 'workbench filter RUN' first")
    counts: dict[str, dict[str, int]] = {}
    per_family: dict[str, dict[str, int]] = defaultdict(dict)  # family -> language -> rows
    models: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    written: set[Path] = set()
    for code in codes:
        accepted = read_parquet(run.table_path(Folder.ACCEPTED, code), ACCEPTED)
        rejected_path = run.table_path(Folder.REJECTED, code)
        rejected = read_parquet(rejected_path, REJECTED) if rejected_path.is_file() else None
        counts[code] = {"accepted": accepted.height, "rejected": 0 if rejected is None else rejected.height}
        models.update(m for m in accepted["model"].to_list() if m)
        if rejected is not None and rejected.height:
            reasons.update(r.split(":")[0] for r in rejected["reasons"].explode().drop_nulls().to_list())
        for (name,), rows in accepted.group_by("family", maintain_order=True):
            columns = family_columns(name)
            lines = [json.dumps({c: row[c] for c in columns}, ensure_ascii=False) for row in rows.iter_rows(named=True)]
            path = out / "data" / name / f"{code}.jsonl"
            atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
            written.add(path)
            per_family[name][code] = rows.height
    _remove_stale(out / "data", written)
    left_out = sorted(code for code, c in counts.items() if not c["accepted"])
    if not per_family:
        raise WorkbenchError("no accepted rows in any language", where=str(run.stage_dir(Folder.ACCEPTED)),
                             fix="nothing to export: see 'workbench audit RUN' for why every example was rejected")
    families = {name: per_family[name] for name in FAMILY_NAMES if name in per_family}
    card = dataset_card(config, registry, counts, models, families, reasons)
    atomic_write_bytes(out / "README.md", card.encode())
    return {"languages": counts, "left_out": left_out, "configs": [DEFAULT_CONFIG, *families],
            "models": dict(models), "out": str(out)}


def _remove_stale(data: Path, written: set[Path]) -> None:
    """Drop JSONL files an earlier export left under ``data/`` (another layout, or a language or family
    with no rows now): the card's globs, and an upload, would otherwise pick them up."""
    for path in sorted(data.rglob("*.jsonl")):
        if path not in written:
            path.unlink()
    for folder in sorted((p for p in data.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def _size_category(total: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if total < limit:
            return name
    return "1M<n<10M"


def _features(columns: list[str]) -> list[dict[str, str]]:
    return [{"name": c, "dtype": "string"} for c in columns]


def _policy(config: RunConfig) -> dict[str, Any]:
    """The ``[filter]`` settings for the card; a model file is named by its file name, not its local path."""
    policy = config.filter.model_dump(mode="json", exclude_none=True)
    for key in ("lid176_path", "extra_fasttext_path"):
        if key in policy:
            policy[key] = Path(policy[key]).name
    return policy


def dataset_card(config: RunConfig, registry: Registry, counts: dict[str, dict[str, int]], models: Counter[str],
                 families: dict[str, dict[str, int]], reasons: Counter[str]) -> str:
    """The README.md of the exported dataset: Hub YAML header, then counts, generator, filter, licence.

    ``families`` maps each family with rows to its rows per language."""
    import tomli_w
    from huggingface_hub import DatasetCardData

    total = sum(c["accepted"] for c in counts.values())
    kept = sorted(code for code, c in counts.items() if c["accepted"])
    left_out = sorted(code for code, c in counts.items() if not c["accepted"])
    data = DatasetCardData(
        language=kept,
        license="other",
        license_name="generated-text",
        pretty_name=f"{config.run.name}: synthetic E5-style embedding data",
        size_categories=[_size_category(total)],
        task_categories=TASK_CATEGORIES,
        tags=["synthetic", "embeddings", "e5", "multilingual"],
        configs=[{"config_name": DEFAULT_CONFIG, "data_files": [{"split": "train", "path": "data/*/*.jsonl"}],
                  "default": True}]
        + [{"config_name": name, "data_files": [{"split": "train", "path": f"data/{name}/*.jsonl"}]} for name in families],
        # declared features: the default config reads files of different families into one schema
        dataset_info=[{"config_name": DEFAULT_CONFIG, "features": _features(all_columns())}]
        + [{"config_name": name, "features": _features(family_columns(name))} for name in families],
    )
    rows = []
    for code in sorted(counts):
        accepted, rejected = counts[code]["accepted"], counts[code]["rejected"]
        name = registry.get(code).name if code in registry else code
        share = f"{accepted / (accepted + rejected):.0%}" if accepted + rejected else "—"
        rows.append(f"| {code} | {name} | {accepted:,} | {rejected:,} | {share} |")
    family_rows = [f"| `{name}` | {FAMILIES[name].title} | {sum(per.values()):,} | "
                   + ", ".join(f"`{c}`" for c in family_columns(name) if c not in COMMON_FIELDS) + " |"
                   for name, per in families.items()]
    generators = ", ".join(f"`{m}` ({n:,})" for m, n in models.most_common()) or "unknown"
    reason_list = ", ".join(f"{name} {n:,}" for name, n in reasons.most_common()) or "none"
    policy = tomli_w.dumps({"filter": _policy(config)}).strip()
    missing = [n for n in FAMILY_NAMES if n not in families]
    left_out_note = (f"\n{', '.join(left_out)}: no accepted rows, so no files and not in `language:` above "
                     "(see the run's audit for the reject reasons).\n" if left_out else "")
    missing_note = f"\nFamilies with no accepted rows (no config): {', '.join(missing)}.\n" if missing else ""
    first = next(iter(families))
    language = next(iter(families[first]))
    return f"""---
{data.to_yaml()}
---

# {config.run.name}: synthetic embedding training data

Synthetic examples in the six task families of *Improving Text Embeddings with Large Language
Models* (Wang et al. 2024), generated per language and kept by a language-ID, script, length and
duplicate filter. {total:,} examples in {len(kept)} language(s).

## Languages

| code | language | examples | rejected | kept |
|---|---|---:|---:|---:|
{chr(10).join(rows)}
{left_out_note}
## Configs, files and fields

One config per task family, each with that family's own fields, and `{DEFAULT_CONFIG}` (the default):
every row in one schema, where the fields of other families are null. Every row has `slot_id`,
`language`, `family`, `task` (the brainstormed task; null for families generated in one step) and
`model` (the generator); bitext rows also have `target_language`: `S1` is in `language`, `S2` and
`S3` in `target_language`.

| config | family | examples | fields |
|---|---|---:|---|
{chr(10).join(family_rows)}
{missing_note}

Files: `data/<family>/<language>.jsonl`, one example per line.

```python
from datasets import load_dataset

everything = load_dataset(PATH, split="train")              # config "{DEFAULT_CONFIG}"
one_family = load_dataset(PATH, "{first}", split="train")
one_language = one_family.filter(lambda row: row["language"] == "{language}")
```

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
        raise WorkbenchError("no trained model in this run", where=str(run.stage_dir(Folder.TRAIN)),
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
