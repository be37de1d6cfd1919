"""The run configuration: one TOML file (``run.toml`` in a run, or any ``CONFIG.toml``).

Each stage owns one section, typed here with closed vocabularies and ``extra="forbid"`` so a typo
fails at load with the file and the field named, not in the middle of a run.

Example ``run.toml``::

    [run]
    name = "quickstart"
    seed = 13
    languages = ["en", "sw", "ja"]
    quota = 12                 # examples per language (default: each language file's quota)

    [generate]
    base_url = "http://127.0.0.1:8080/v1"
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workbench.errors import ConfigError
from workbench.families import FAMILY_NAMES


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def fingerprint(self) -> str:
        """A short hash of the section, used to tell whether a stage's outputs are current."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class RunSection(Section):
    name: str = "run"
    seed: int = 13
    languages: list[str] = Field(default_factory=lambda: ["all"])
    families: list[str] = Field(default_factory=lambda: list(FAMILY_NAMES))
    quota: int | None = Field(default=None, ge=1, description="examples per language for all languages")
    quotas: dict[str, int] = Field(default_factory=dict, description="per-language overrides")

    @field_validator("families")
    @classmethod
    def _known_families(cls, families: list[str]) -> list[str]:
        for name in families:
            if name not in FAMILY_NAMES:
                raise ValueError(f"'{name}' is not a task family (one of {', '.join(FAMILY_NAMES)})")
        if not families:
            raise ValueError("at least one task family is needed")
        return families

    @field_validator("quotas")
    @classmethod
    def _positive_quotas(cls, quotas: dict[str, int]) -> dict[str, int]:
        for code, value in quotas.items():
            if value < 1:
                raise ValueError(f"quota for '{code}' is {value}; it must be at least 1")
        return quotas


# --- generate (issue 4) ---------------------------------------------------------------------
class GenerateSection(Section):
    pass


# --- filter (issue 5) -----------------------------------------------------------------------
class FilterSection(Section):
    pass


# --- train (issue 6) ------------------------------------------------------------------------
class TrainSection(Section):
    """Fine-tuning an embedder on accepted/ (E5-mistral recipe defaults, Wang et al. 2024 §4.1).

    ``model`` is a local folder (an HF model, or a sentence-transformers folder such as the MiniLM
    demo embedder). Decoders (``*ForCausalLM`` / ``is_decoder``) get last-token pooling with EOS
    appended; encoders get mean pooling, unless ``pooling`` says otherwise.
    """

    model: str | None = Field(default=None, description="local model folder (required to train)")
    deepspeed: Literal["zero2", "zero3", "none"] = "zero3"
    deepspeed_config: str | None = Field(default=None, description="JSON file replacing configs/<stage>.json")
    offload: Literal["none", "optimizer", "optimizer+params"] = "none"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    pooling: Literal["auto", "last_token", "mean", "cls"] = "auto"
    lora: bool = True
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    gradient_checkpointing: bool = True
    temperature: float = Field(default=0.02, gt=0.0)
    max_length: int = Field(default=512, ge=8)
    batch_size: int = Field(default=2048, ge=2, description="global batch (queries) per step")
    chunk_size: int = Field(default=0, ge=0, description="GradCache chunk per device; 0 = whole batch")
    steps: int = Field(default=1000, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0.0)
    warmup_steps: int = Field(default=100, ge=0)
    weight_decay: float = Field(default=0.1, ge=0.0)
    one_task_per_batch: bool = False
    language_weights: dict[str, float] = Field(default_factory=dict, description="default 1.0 each")
    family_weights: dict[str, float] = Field(default_factory=dict, description="default 1.0 each")
    sts_instruction: str = "Retrieve semantically similar text."
    bitext_instruction: str = "Retrieve parallel sentences."
    gpu_memory_gib: float = Field(default=80.0, gt=0.0, description="per-GPU memory for the fit check")
    export: Literal["merged", "adapter"] = "merged"
    log_every: int = Field(default=10, ge=1)

    @field_validator("family_weights")
    @classmethod
    def _known_weight_families(cls, weights: dict[str, float]) -> dict[str, float]:
        for name, value in weights.items():
            if name not in FAMILY_NAMES:
                raise ValueError(f"'{name}' is not a task family (one of {', '.join(FAMILY_NAMES)})")
            if value < 0:
                raise ValueError(f"weight for '{name}' is {value}; it must be 0 or more")
        return weights

    @field_validator("language_weights")
    @classmethod
    def _non_negative_language_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        for code, value in weights.items():
            if value < 0:
                raise ValueError(f"weight for '{code}' is {value}; it must be 0 or more")
        return weights


# --- eval (issue 7) -------------------------------------------------------------------------
class EvalSection(Section):
    pass


# --- report (issue 8) -----------------------------------------------------------------------
class ReportSection(Section):
    pass


class RunConfig(Section):
    run: RunSection = Field(default_factory=RunSection)
    generate: GenerateSection = Field(default_factory=GenerateSection)
    filter: FilterSection = Field(default_factory=FilterSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    report: ReportSection = Field(default_factory=ReportSection)

    def to_toml(self) -> str:
        return tomli_w.dumps(_drop_none(self.model_dump(mode="json")))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def parse_config(data: dict[str, Any], where: str) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        problem = err.errors()[0]
        location = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "not a known setting (check the spelling)"
        elif problem["type"] == "missing":
            message = "required but missing"
        raise ConfigError(f"field '{location}': {message}", where=where) from None


def load_config(path: Path | str) -> RunConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config file not found", where=str(path)) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", where=str(path), fix="fix the syntax") from None
    return parse_config(data, where=str(path))
