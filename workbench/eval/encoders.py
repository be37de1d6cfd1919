"""Encoders that speak mteb's encoder protocol, over the one encoder contract (:mod:`workbench.encoder`).

* a folder the trainer exported: it has ``workbench_encoder.json`` (the saved-model contract);
  a LoRA adapter folder (``adapter_config.json``) is loaded on its base model and merged;
* a folder without the contract: a known preset (e5-mistral, multilingual-e5) or the folder's
  sentence-transformers ``prompts``; otherwise plain texts and a warning (for a decoder, one line per
  task at eval naming the fix: its queries would otherwise lose their instruction silently);
* ``contract_from``: one folder's weights under another folder's contract (template, max_length,
  pooling, EOS, padding), e.g. the base model under its fine-tuned export's contract, so base and
  fine-tuned differ only in their weights (:func:`borrowed_spec`);
* decoders always run on the HF back-end (the contract's tokenising: EOS after truncation, checked
  on a long text at load; last-token pooling); encoders in sentence-transformers folders run on
  sentence-transformers with pooling and normalisation as saved.

The query instruction is the mteb task's own query prompt where it has one, else the task's entry in
``instructions.toml``. Retrieval tasks put it on queries only; tasks with no corpus side (STS,
bitext, classification) put it on every text. Texts are encoded in length-sorted batches (fp32 on
CPU, bf16 on CUDA), with a progress bar, through :class:`~workbench.eval.cache.EmbeddingCache`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType
from tqdm.auto import tqdm

from workbench.encoder import (
    CONTRACT_FILE,
    INSTRUCTIONS_FILE,
    PRESETS,
    EncoderSpec,
    check_eos,
    inspect_model,
    instructs_every_text,
    is_decoder_config,
    load_spec,
    pool,
    task_instructions,
    tokenize,
)
from workbench.errors import WorkbenchError, first_line
from workbench.eval.cache import EmbeddingCache, text_key

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mteb.abstasks.task_metadata import TaskMetadata

log = logging.getLogger(__name__)


def _st_pooling(folder: Path) -> str | None:
    """The pooling a sentence-transformers folder saved (mean, cls, last_token), or None if unreadable."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        module = next(m for m in modules if str(m.get("type", "")).endswith("Pooling"))
        config = json.loads((folder / module.get("path", "") / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, StopIteration):
        return None
    for key, mode in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"),
                      ("pooling_mode_lasttoken", "last_token")):
        if config.get(key):
            return mode
    return None


def borrowed_spec(model: str | Path, contract_from: str | Path) -> EncoderSpec:
    """``model``'s weights run exactly as ``contract_from``'s contract says (its ``workbench_encoder.json``:
    query/document templates, prompts, max_length, pooling, normalisation, EOS, padding side).

    A sentence-transformers folder keeps its own back-end when it pools as the contract does; otherwise
    its transformer weights run on the HF back-end with the contract's pooling.
    """
    contract_dir = Path(contract_from).expanduser()
    if not (contract_dir / CONTRACT_FILE).is_file():
        raise WorkbenchError(f"no {CONTRACT_FILE} to borrow", where=str(contract_dir),
                             fix="give contract_from a model folder the trainer exported (it carries the contract)")
    contract = load_spec(contract_dir)
    info = inspect_model(model)
    spec = replace(contract, path=str(info.path), base_model=None, source=f"contract of {contract_dir}")
    if spec.format == "sentence-transformers" and (
            not info.is_sentence_transformers or _st_pooling(info.path) != (spec.pooling or "mean")):
        spec = replace(spec, format="hf", path=str(info.hf_path), pooling=spec.pooling or "mean")
    return spec
def adapter_base(spec: EncoderSpec) -> str | None:
    """Where an adapter folder's base weights are: the local folder peft's ``adapter_config.json``
    names, else the contract's ``base_model`` (a Hub id in exports: the card's name for it)."""
    config = Path(spec.path) / "adapter_config.json"
    local = json.loads(config.read_text()).get("base_model_name_or_path") if config.is_file() else None
    return local if local and Path(local).is_dir() else spec.base_model


def fingerprint(spec: EncoderSpec) -> str:
    """A short hash of the spec and the weight files: the embedding cache's model key."""
    digest = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    base = adapter_base(spec)
    folders = [Path(spec.path)] + ([Path(base)] if base and Path(base).is_dir() else [])
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
    def __init__(self, spec: EncoderSpec, device: str, overrides: dict[str, Any] | None = None):
        from sentence_transformers import SentenceTransformer

        overrides = overrides or {}
        if overrides.get("rope_theta") or overrides.get("sliding_window"):
            raise WorkbenchError("RoPE base and sliding window overrides need a decoder with rotary positions",
                                 where=spec.path, fix="drop rope_theta / sliding_window for this encoder")
        self.model = SentenceTransformer(spec.path, device=device, local_files_only=True)
        if device.startswith("cuda"):
            self.model.half()  # fp16 on GPU, fp32 on CPU
        if overrides.get("max_length"):  # asked for: read exactly this many tokens (up to the position table)
            limit = getattr(self.model[0].auto_model.config, "max_position_embeddings", None)
            if limit and overrides["max_length"] > limit:
                raise WorkbenchError(f"max_length {overrides['max_length']} exceeds the model's {limit} positions",
                                     where=spec.path, fix=f"use max_length <= {limit}")
            self.model.max_seq_length = overrides["max_length"]
        elif spec.max_length:
            self.model.max_seq_length = min(self.model.max_seq_length or spec.max_length, spec.max_length)
        self.normalize = spec.normalize
        self.dim = self.model.get_embedding_dimension()
        self.max_length = int(self.model.max_seq_length) if self.model.max_seq_length else spec.max_length
        first = self.model[0]
        config = getattr(getattr(first, "auto_model", None), "config", None)
        self.is_decoder = bool(config is not None and is_decoder_config(config.to_dict()))
        self.tokenizer = self.model.tokenizer
        self.window = int(self.model.max_seq_length)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        ).astype(np.float32)


def _with_overrides(config: Any, overrides: dict[str, Any], where: str) -> Any:
    """An HF config with the RoPE base and the sliding window replaced (decoders with rotary positions)."""
    rope, window = overrides.get("rope_theta"), overrides.get("sliding_window")
    if not rope and not window:
        return config
    parameters = getattr(config, "rope_parameters", None)
    if not (isinstance(parameters, dict) and "rope_theta" in parameters) and not hasattr(config, "rope_theta"):
        raise WorkbenchError(f"a {config.model_type} model has no rotary positions to override", where=where,
                             fix="rope_theta / sliding_window apply to decoders with RoPE (Mistral, Llama, Qwen)")
    if rope:
        if isinstance(parameters, dict) and "rope_theta" in parameters:
            config.rope_parameters = {**parameters, "rope_theta": float(rope)}
        else:
            config.rope_theta = float(rope)
    if window:
        config.sliding_window = int(window)
    return config


class _HFBackend:
    def __init__(self, spec: EncoderSpec, device: str, overrides: dict[str, Any] | None = None):
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.torch = torch
        self.spec = spec
        self.device = device
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        folder = Path(spec.path)
        if (folder / "adapter_config.json").is_file():
            from peft import PeftModel

            base = adapter_base(spec)
            config = _with_overrides(AutoConfig.from_pretrained(base, local_files_only=True), overrides or {}, spec.path)
            model = AutoModel.from_pretrained(base, config=config, torch_dtype=dtype, local_files_only=True)
            model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
            tok_source = str(folder) if (folder / "tokenizer_config.json").is_file() else base
        else:
            config = _with_overrides(AutoConfig.from_pretrained(str(folder), local_files_only=True), overrides or {}, spec.path)
            model = AutoModel.from_pretrained(str(folder), config=config, torch_dtype=dtype, local_files_only=True)
            tok_source = str(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(tok_source, local_files_only=True)
        self.tokenizer.padding_side = spec.padding_side
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.add_eos = spec.add_eos and self.tokenizer.eos_token_id is not None
        if spec.add_eos and not self.add_eos:
            log.warning("%s: the contract asks for EOS but the tokenizer has none; texts end without it", spec.path)
        if self.add_eos:
            check_eos(self.tokenizer, spec.max_length, where=spec.path)
        self.model = model.to(device).eval()
        self.dim = int(model.config.hidden_size)
        self.max_length = spec.max_length
        self.is_decoder = is_decoder_config(model.config.to_dict())
        self.window = int(spec.max_length)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        torch = self.torch
        out = []
        for start in range(0, len(texts), batch_size):
            batch = tokenize(self.tokenizer, texts[start : start + batch_size], self.spec.max_length, self.add_eos)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.inference_mode():
                hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            pooled = pool(hidden, batch["attention_mask"], self.spec.pooling).float()
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
        contract_from: str | Path | None = None,
        max_length: int | None = None,
        rope_theta: float | None = None,
        sliding_window: int | None = None,
    ):
        """``max_length``, ``rope_theta``, ``sliding_window``: overrides for long-context probes (the
        tokens read; a decoder's RoPE base and attention window); they join the cache's model key."""
        import torch

        self.spec = borrowed_spec(model, contract_from) if contract_from else load_spec(model, pooling=pooling)
        self.overrides = {k: v for k, v in (("max_length", max_length), ("rope_theta", rope_theta),
                                            ("sliding_window", sliding_window)) if v is not None}
        if max_length is not None:
            self.spec = replace(self.spec, max_length=int(max_length))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.instructions = task_instructions() if instructions is None else instructions
        self.show_progress = show_progress
        # (desc, texts finished) after each chunk; set by the eval stage for the CLI's view (then no tqdm bar)
        self.progress: Callable[[str, int], None] | None = None
        self.cache_root = cache_root
        self.chunk_size = max(batch_size, chunk_size)  # texts per backend call (and per cache write)
        self.flush_every = flush_every
        self.fingerprint = fingerprint(self.spec)
        if self.overrides:
            self.fingerprint = hashlib.sha256(
                (self.fingerprint + json.dumps(self.overrides, sort_keys=True)).encode()).hexdigest()[:16]
        try:
            if self.spec.format == "sentence-transformers":
                self.backend: Any = _SentenceTransformerBackend(self.spec, self.device, self.overrides)
            else:
                self.backend = _HFBackend(self.spec, self.device, self.overrides)
        except (OSError, ValueError, KeyError, RuntimeError, ImportError) as err:
            first = first_line(err, 200)
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
                use_instructions=self.spec.uses_instruction,
                framework=["PyTorch"],
                max_tokens=self.spec.max_length,
            )
        )
        self._caches: dict[str, EmbeddingCache] = {}
        self._warned: set[str] = set()

    @property
    def max_length(self) -> int:
        """Tokens per text as this model runs (a sentence-transformers folder may cap the contract's)."""
        return int(self.backend.max_length)

    def instruction_for(self, task_metadata: TaskMetadata) -> tuple[str, str]:
        """(instruction, its source) this model's queries get on ``task_metadata`` (the results columns).

        A decoder with no instruction for the task (no contract, no preset name, no prompt for the
        task) gets one warning line naming the fix: its queries would otherwise lose it silently.
        """
        instruction, source = self.spec.query_instruction(task_metadata, self.instructions)
        task = task_metadata.name
        if source == "none" and self.backend.is_decoder and task not in self._warned:
            self._warned.add(task)
            log.warning(
                "%s is a decoder with no instruction for %s (no %s, no preset name among %s, no sentence-transformers "
                "prompt for the task): its queries go in without one and its results record instruction 'none'; fix: add "
                "%s with \"query_template\": \"Instruct: {instruction}\\nQuery: {text}\" to the folder, or name the "
                "folder after its preset (e.g. e5-mistral-7b-instruct)",
                self.spec.path, task, CONTRACT_FILE, ", ".join(PRESETS), CONTRACT_FILE)
        return instruction, source

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
        instruction, instructed = self.formatting(task_metadata, prompt_type)
        side = "queries" if prompt_type == PromptType.query else "documents" if prompt_type == PromptType.document else "texts"
        return self.encode_texts(texts, instruction=instruction, desc=f"{hf_subset} {side}",
                                 as_query=instructed, task=task_metadata.name)

    def formatting(self, task_metadata: TaskMetadata, prompt_type: PromptType | None) -> tuple[str, bool]:
        """(instruction, as_query) for texts of ``task_metadata`` on the ``prompt_type`` side: what
        :meth:`encode` passes to :meth:`encode_texts` (the sharded search uses the same decision)."""
        task = task_metadata.name
        instructed = prompt_type == PromptType.query or instructs_every_text(task_metadata)
        instruction = ""
        if instructed and self.spec.uses_instruction:
            instruction, source = self.instruction_for(task_metadata)
            if source == "none":
                instruction = ""
                log.warning("no instruction for task %s (no task prompt, no entry in %s); queries go in plain",
                            task, INSTRUCTIONS_FILE)
            else:
                log.info("task %s: instruction from %s", task, source)
        elif instructed:
            self.instruction_for(task_metadata)  # the warning for a decoder without one
        return instruction, instructed

    def template_key(self, instruction: str, as_query: bool, task: str = "") -> str:
        """The text a query or document is wrapped in (the text itself left empty): with the model
        fingerprint, what decides a vector besides the text (the embedding caches key on it)."""
        return self.spec.query_text("", instruction, task) if as_query else self.spec.document_text("", task)

    # -- our own entry point (also used by the throughput benchmark) ---------------------------
    def encode_texts(self, texts: Sequence[str], *, instruction: str = "", desc: str = "encode",
                     as_query: bool | None = None, task: str = "") -> np.ndarray:
        """Vectors for ``texts`` in order, formatted as queries (``as_query``; default: when an
        ``instruction`` is given) or as documents, by the spec's templates or prompts."""
        as_query = bool(instruction) if as_query is None else as_query
        if as_query:
            rendered = [self.spec.query_text(t, instruction, task) for t in texts]
        else:
            rendered = [self.spec.document_text(t, task) for t in texts]
        template_key = self.template_key(instruction, as_query, task)
        keys = [text_key(t) for t in texts]
        cache = self._cache(template_key)
        result = np.zeros((len(texts), self.backend.dim), dtype=np.float32)
        found = cache.lookup(keys) if cache is not None else {}
        for i, vector in found.items():
            result[i] = vector
        todo = sorted((i for i in range(len(texts)) if i not in found), key=lambda i: -len(rendered[i]))
        if found:
            log.info("%s: %d of %d vectors from the cache", desc, len(found), len(texts))
            if self.progress is not None:
                self.progress(desc, len(found))
        # a view wants news more often than every 512 texts (a minute on a loaded CPU); the texts are
        # sorted by length, so smaller chunks still make the same batches
        chunk = self.chunk_size if self.progress is None else min(self.chunk_size, 4 * self.batch_size)
        bar_off = not self.show_progress or not todo or self.progress is not None
        with tqdm(total=len(todo), desc=desc, unit="text", disable=bar_off) as bar:
            for start in range(0, len(todo), chunk):
                positions = todo[start : start + chunk]
                vectors = self.backend.encode([rendered[i] for i in positions], self.batch_size)
                result[positions] = vectors
                if cache is not None:
                    cache.add([keys[i] for i in positions], vectors)
                bar.update(len(positions))
                if self.progress is not None:
                    self.progress(desc, len(positions))
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
