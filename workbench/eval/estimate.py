"""``workbench eval RUN --estimate``: what a (sharded) retrieval evaluation will cost, before it runs.

Per language: passages and characters — counted from the corpus files of a local ``--data-dir``, or,
for hub tasks, read offline from the mteb task's descriptive statistics (mteb ships them with the
package; ``MIRACLRetrieval`` has all 18 full corpora) — tokens, the fp16 embedding shards and per-shard
top-k files on disk, and GPU-hours at a throughput. Nothing is encoded and no network is used.

Tokens: with a model folder and a local corpus, the model's own tokenizer counts a sample of
passages; otherwise characters / ``chars_per_token`` of ``scale.toml`` (Mistral-7B's tokenizer,
measured per MIRACL language). Throughput: ``--throughput`` passages/s per GPU measured at
``--throughput-tokens`` tokens per passage, else ``scale.toml``'s assumption (H100, 7B shape)
scaled by parameter count; a language's passages/s scale inversely with its tokens per passage.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from workbench.errors import UnknownLanguageError, WorkbenchError
from workbench.resources import package_path
from workbench.run import Folder
from workbench.systems import BM25, MINILM

SCALE_FILE = package_path("eval", "scale.toml")
SAMPLE_PASSAGES = 2000  # passages the model's tokenizer counts per language
TOPK = 1000  # mteb's top_k: per-shard top-k files hold this many (score, row) pairs per query
DEFAULT_DIM = 4096  # a 7B model's hidden size, when no model folder is given


@cache
def scale_assumptions() -> dict[str, Any]:
    return tomllib.loads(SCALE_FILE.read_text(encoding="utf-8"))


@dataclass
class LanguagePlan:
    language: str
    passages: int
    characters: int
    queries: int
    tokens_per_passage: float
    token_source: str
    shard_bytes: int = 0
    topk_bytes: int = 0
    gpu_hours: float = 0.0

    @property
    def tokens(self) -> float:
        return self.passages * self.tokens_per_passage


@dataclass
class Plan:
    title: str
    languages: list[LanguagePlan]
    dim: int
    params: float
    max_length: int
    passages_per_second: float  # per GPU, at reference_tokens tokens per passage
    reference_tokens: float
    throughput_source: str
    gpus: int
    notes: list[str] = field(default_factory=list)

    @property
    def disk_bytes(self) -> int:
        return sum(lang.shard_bytes + lang.topk_bytes for lang in self.languages)

    @property
    def gpu_hours(self) -> float:
        return sum(lang.gpu_hours for lang in self.languages)

    def rows(self) -> list[list[str]]:
        out = []
        for lang in self.languages:
            out.append([lang.language, f"{lang.passages:,}", f"{lang.tokens_per_passage:.0f}",
                        f"{lang.tokens / 1e6:,.1f}", _gib(lang.shard_bytes + lang.topk_bytes), f"{lang.gpu_hours:,.1f}",
                        _hours(lang.gpu_hours / self.gpus)])
        total_tokens = sum(lang.tokens for lang in self.languages)
        passages = sum(lang.passages for lang in self.languages)
        out.append(["all", f"{passages:,}", f"{total_tokens / max(passages, 1):.0f}", f"{total_tokens / 1e6:,.1f}", _gib(self.disk_bytes),
                    f"{self.gpu_hours:,.1f}", _hours(self.gpu_hours / self.gpus)])
        return out


HEADER = ["lang", "passages", "tok/psg", "tokens M", "disk", "GPU-h", "{gpus} GPU(s)"]


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _params(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _hours(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:,.1f} d"
    if hours >= 1:
        return f"{hours:,.1f} h"
    return f"{hours * 60:,.1f} min"


# -- passages and characters per language ----------------------------------------------------------
def _mteb_stats(task_name: str, languages: list[str], split: str) -> dict[str, tuple[int, int, int]]:
    """language -> (passages, characters, queries) from the mteb task's descriptive statistics."""
    import mteb

    stats = mteb.get_task(task_name).metadata.descriptive_stats or {}
    per_subset = (stats.get(split) or {}).get("hf_subset_descriptive_stats") or {}
    out = {}
    for code in languages:
        entry = per_subset.get(code)
        if entry is None:
            raise WorkbenchError(f"mteb's {task_name} statistics have no '{code}' {split}", where="--languages",
                                 fix=f"it has {' '.join(sorted(per_subset)) or 'no statistics for this split'}")
        out[code] = (int(entry["num_documents"]), int(entry["documents_text_statistics"]["total_text_length"]),
                     int(entry.get("num_queries", 0)))
    return out


def _corpus_texts(path: Path):
    """Passages of a corpus file as mteb builds them (title + " " + text, stripped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                title, text = record.get("title") or "", record.get("text") or ""
                yield (f"{title} {text}".strip() if title else text.strip())


def _count_lines(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def _local_corpora(section: Any, registry: Any) -> dict[str, tuple[Path, Path | None]]:
    """language -> (corpus file, queries/topics file) of a local MIRACL or BEIR folder."""
    data_dir = Path(section.data_dir)
    if not data_dir.is_dir():
        raise WorkbenchError("data folder not found", where=str(data_dir), fix="give --data-dir an existing folder")
    found: dict[str, tuple[Path, Path | None]] = {}
    if section.task == "miracl":
        split = section.split or "dev"
        codes = section.languages or [lang.code for lang in registry.miracl]
        for code in codes:
            corpus = next((data_dir / p for p in (f"corpus/{code}/corpus.jsonl.gz", f"corpus/{code}/corpus.jsonl",
                                                  f"{code}/corpus.jsonl.gz", f"{code}/corpus.jsonl") if (data_dir / p).is_file()), None)
            topics = next((data_dir / p for p in (f"topics.miracl-v1.0-{code}-{split}.tsv", f"{code}/topics.tsv")
                           if (data_dir / p).is_file()), None)
            if corpus is not None:
                found[code] = (corpus, topics)
            elif section.languages:
                raise UnknownLanguageError(f"no corpus for '{code}'", where=str(data_dir),
                                           fix="expected corpus/<lang>/corpus.jsonl[.gz]")
    else:
        folders = [data_dir] if any(data_dir.glob("corpus.jsonl*")) else sorted(p for p in data_dir.iterdir() if any(p.glob("corpus.jsonl*")))
        for folder in folders:
            code = folder.name if folder != data_dir or not section.languages else section.languages[0]
            if section.languages and code not in section.languages and folder != data_dir:
                continue
            corpus = next(folder.glob("corpus.jsonl*"))
            queries = next(iter(folder.glob("queries.jsonl*")), None)
            found[code] = (corpus, queries)
    if not found:
        raise WorkbenchError("no corpus here", where=str(data_dir), fix="point --data-dir at a MIRACL- or BEIR-layout folder")
    return found


# -- the model -----------------------------------------------------------------------------------------
@dataclass
class ModelFacts:
    params: float
    dim: int
    max_length: int
    tokenizer: Any = None
    source: str = ""


def model_facts(model: str | None, params: float | None) -> ModelFacts:
    """Parameters (``--model-params``, else the weight files' size / dtype width), vector size and
    max length of ``model`` (a folder or ``minilm``); without a model a 7B one is assumed."""
    assumed = scale_assumptions()["throughput"]
    if not model or model == BM25:
        return ModelFacts(params or float(assumed["model_params"]), DEFAULT_DIM, 512, None,
                          "none given: a 7B embedder assumed (e5-mistral-7b shape, 4096-dim)")
    from workbench.encoder import inspect_model, load_spec, minilm_path

    path = minilm_path() if model == MINILM else Path(model).expanduser()
    spec = load_spec(path)
    info = inspect_model(path) if not (path / "adapter_config.json").is_file() else None
    config_dir = info.hf_path if info else Path(spec.base_model or path)
    config = json.loads((config_dir / "config.json").read_text()) if (config_dir / "config.json").is_file() else {}
    dim = int(config.get("hidden_size") or config.get("d_model") or DEFAULT_DIM)
    if params is None:
        width = 4 if str(config.get("torch_dtype") or config.get("dtype") or "float32") == "float32" else 2
        weights = [f for f in config_dir.rglob("*") if f.suffix in (".safetensors", ".bin") and f.is_file()]
        params = sum(f.stat().st_size for f in weights) / width if weights else float(assumed["model_params"])
    tokenizer = None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(config_dir), local_files_only=True)
    except (OSError, ValueError, KeyError):
        pass
    return ModelFacts(float(params), dim, spec.max_length, tokenizer, str(path))


def _tokens_per_passage(code: str, characters: int, passages: int, facts: ModelFacts,
                        corpus: Path | None) -> tuple[float, str]:
    if facts.tokenizer is not None and corpus is not None:
        total = _count_lines(corpus) if passages <= 0 else passages
        step = max(1, total // SAMPLE_PASSAGES)
        sample = [t for i, t in enumerate(_corpus_texts(corpus)) if i % step == 0][:SAMPLE_PASSAGES]
        if sample:
            ids = facts.tokenizer(sample, add_special_tokens=True, truncation=True, max_length=facts.max_length)["input_ids"]
            return sum(len(x) for x in ids) / len(ids), f"model tokenizer, {len(sample):,} passages"
    table = scale_assumptions()["chars_per_token"]
    entry = table.get(code, table["default"])
    mean_chars = characters / max(passages, 1)
    tokens = min(float(facts.max_length), mean_chars / entry["chars_per_token"] + 2)
    return tokens, f"{entry['chars_per_token']:.2f} chars/token (scale.toml)"


# -- the plan ------------------------------------------------------------------------------------------
def estimate(section: Any, registry: Any, *, model: str | None = None, gpus: int = 1, throughput: float | None = None,
             throughput_tokens: float | None = None, model_params: float | None = None,
             shard_rows_override: int | None = None) -> Plan:
    """The plan for ``section`` (an ``[eval]`` section) and ``model`` (a folder or ``minilm``; None:
    a 7B embedder is assumed): see the module docstring."""
    from workbench.eval.sharded import plan_shards, shard_rows
    from workbench.eval.targets import MIRACL_TASKS

    if section.task == "tatoeba":
        raise WorkbenchError("--estimate plans retrieval corpora", where="--task", fix="use miracl, xquad or beir")
    facts = model_facts(model, model_params)
    split = section.split or ("dev" if section.task == "miracl" else "test")
    counts: dict[str, tuple[int, int, int]] = {}
    files: dict[str, Path | None] = {}
    if section.data_dir:
        for code, (corpus, queries) in _local_corpora(section, registry).items():
            passages = characters = 0
            for text in _corpus_texts(corpus):
                passages += 1
                characters += len(text)
            counts[code] = (passages, characters, _count_lines(queries) if queries else 0)
            files[code] = corpus
        title = f"{section.task} from {section.data_dir}"
    elif section.task == "miracl":
        miracl = [lang.code for lang in registry.miracl]
        languages = section.languages or miracl
        for code in languages:
            registry.get(code)
            if code not in miracl:
                raise UnknownLanguageError(f"'{code}' is not a MIRACL language", where="--languages",
                                           fix=f"MIRACL has {' '.join(miracl)}")
        task_name = MIRACL_TASKS[section.corpus]
        counts = _mteb_stats(task_name, languages, split)
        files = dict.fromkeys(counts)
        title = f"{task_name} ({section.corpus} corpus, mteb's descriptive statistics), {split}"
    else:
        raise WorkbenchError(f"task '{section.task}' reads local files", where="--data-dir", fix="give --data-dir")

    assumed = scale_assumptions()["throughput"]
    if throughput is not None:
        rate, reference = throughput, throughput_tokens or float(assumed["tokens_per_passage"])
        source = f"{throughput:g} passages/s per GPU at {reference:g} tokens/passage (given)"
    else:
        rate = float(assumed["passages_per_second"]) * float(assumed["model_params"]) / facts.params
        reference = float(assumed["tokens_per_passage"])
        source = (f"ASSUMED {rate:,.0f} passages/s per GPU at {reference:g} tokens/passage: {assumed['measured_on']}, "
                  f"scaled to {_params(facts.params)} parameters (not measured for this model)")
    plans = []
    for code, (passages, characters, queries) in counts.items():
        tokens, token_source = _tokens_per_passage(code, characters, passages, facts, files.get(code))
        rows = shard_rows(passages, shard_rows_override)
        shards = plan_shards(passages, "corpus", rows)
        shard_bytes = passages * facts.dim * 2 + 128 * len(shards)
        topk_bytes = sum(queries * min(TOPK, s.rows) * 8 for s in shards)
        seconds = passages * tokens / (rate * reference)
        plans.append(LanguagePlan(code, passages, characters, queries, tokens, token_source, shard_bytes, topk_bytes,
                                  seconds / 3600))
    notes = [f"throughput: {source}",
             f"model: {facts.source}; {_params(facts.params)} parameters, {facts.dim}-dim fp16 vectors, max_length {facts.max_length}",
             f"wall time on {gpus} GPU(s) = GPU-hours / {gpus} (shards spread evenly; no start-up, load or merge time)",
             "tokens per passage: " + "; ".join(
                 f"{', '.join(p.language for p in plans if _source_kind(p) == kind)}: {kind}"
                 for kind in dict.fromkeys(_source_kind(p) for p in plans)),
             "disk: fp16 vectors plus the per-shard top-k files (queries x 1000 x 8 bytes per shard)"]
    return Plan(title, plans, facts.dim, facts.params, facts.max_length, rate, reference, source, gpus, notes)


def _source_kind(plan: LanguagePlan) -> str:
    if plan.token_source.startswith("model tokenizer"):
        return "the model's tokenizer on a sample of the corpus"
    return "characters / chars_per_token in workbench/eval/scale.toml (Mistral-7B tokenizer)"


def existing_shard_bytes(run_root: Path) -> int:
    """Bytes of shard files already under the run's embedding cache (a resumed job keeps them)."""
    root = Path(run_root) / Folder.EVAL / "embeddings"
    if not root.is_dir():
        return 0
    return sum(f.stat().st_size for f in root.glob("*/shards/**/*") if f.is_file())


@dataclass
class DiskRoom:
    """Whether ``needed`` bytes of embedding shards fit on the disk of the run directory ``root``."""

    root: Path
    missing: int  # needed beyond the shards already written
    free: int
    what: str = "the embeddings"

    @property
    def fits(self) -> bool:
        return self.missing <= self.free

    def check(self) -> None:
        """One error line when the shards do not fit."""
        if not self.fits:
            raise WorkbenchError(
                f"{self.what} need {_gib(self.missing)} more but {_gib(self.free)} are free on its disk",
                where=str(self.root / Folder.EVAL / "embeddings"),
                fix="free space, put the run directory on a larger disk, or evaluate fewer languages")


def disk_room(run_root: Path, needed: int, *, what: str = "the embeddings") -> DiskRoom:
    """How much of ``needed`` is not on disk yet, and how much the run directory's disk has free."""
    target = Path(run_root).resolve()
    probe = target
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    return DiskRoom(target, max(0, needed - existing_shard_bytes(target)), free, what)


def check_disk(run_root: Path, needed: int, *, what: str = "the embeddings") -> tuple[int, int]:
    """(needed beyond what is already there, free bytes); one error line when it does not fit."""
    room = disk_room(run_root, needed, what=what)
    room.check()
    return room.missing, room.free


def estimate_run(run_root: Path, section: Any, registry: Any, **options: Any) -> tuple[Plan, DiskRoom]:
    """``eval --estimate``: the plan for ``section`` (:func:`estimate`, same options) and whether its
    embedding shards fit on the disk of ``run_root``; reads only."""
    plan = estimate(section, registry, **options)
    return plan, disk_room(run_root, plan.disk_bytes)


def table_header(gpus: int) -> list[str]:
    return [h.format(gpus=gpus) for h in HEADER]


__all__ = ["Plan", "LanguagePlan", "DiskRoom", "check_disk", "disk_room", "estimate", "estimate_run", "model_facts", "scale_assumptions", "table_header",
]
