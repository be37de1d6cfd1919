"""The saved-model contract (``workbench_encoder.json``): how to load and run one model folder.

:class:`EncoderSpec` holds format, pooling, normalisation, max length, query/document templates,
EOS, padding side, base model and prompts. :func:`load_spec` reads a folder (the contract first,
then a known preset, then the folder's sentence-transformers ``prompts``, else plain texts with a
warning); :func:`write_spec` writes it. Train writes it, eval reads it; neither has its own copy.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from workbench.encoder.inspection import is_decoder_config, read_json
from workbench.encoder.instructions import task_instruction
from workbench.encoder.minilm import minilm_path
from workbench.encoder.pooling import POOLINGS, Pooling
from workbench.encoder.templates import QUERY_TEMPLATE, render
from workbench.errors import WorkbenchError

# the package's logger name, as before the split, so a log line reads the same
log = logging.getLogger("workbench.encoder")

CONTRACT_FILE = "workbench_encoder.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"


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
    prompts = read_json(file).get("prompts") or {}
    return {str(k): str(v) for k, v in prompts.items() if isinstance(v, str) and v}


def _from_contract(path: Path, contract: Path, pooling: str | None) -> EncoderSpec:
    data = read_json(contract)
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
        base = read_json(adapter).get("base_model_name_or_path")
        config_dir = Path(base) if base else path
    is_st = (path / "modules.json").is_file()
    if not (is_st or (config_dir / "config.json").is_file() or adapter.is_file()):
        raise WorkbenchError(
            "not a model folder (no workbench_encoder.json, modules.json or config.json)",
            where=str(path),
            fix="point --model at an exported model directory",
        )
    config = read_json(config_dir / "config.json") if (config_dir / "config.json").is_file() else {}
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
