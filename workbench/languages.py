"""The language registry: one TOML file per language under ``languages/``.

Each file is validated into a frozen :class:`Language`; any problem is reported as one line naming
the file and the field, e.g. ``languages/sw.toml: field 'scripts': 'latn' is not an ISO 15924 code
this registry knows (did you mean 'Latn'?)``.

Example::

    registry = load_registry()
    registry.get("sw").lid.fasttext_lid176   # 'sw'
    registry.select(["low"])                 # every low-resource generation language
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from workbench.errors import ConfigError, UnknownLanguageError
from workbench.filter.members import LABEL_FIELDS, UNSUPPORTED
from workbench.resources import data_dir

Tier = Literal["high", "mid", "low"]
TIERS: tuple[str, ...] = ("high", "mid", "low")
HIGH_TIER_MIN_M = 1000  # CC-100 tokens (millions): high >= 1B, mid 100M-1B, low < 100M
MID_TIER_MIN_M = 100

# ISO 15924 codes used by the registry -> the Unicode script names (``regex`` ``\p{Script=...}``)
# whose letters count as "in script". Japanese and Korean mix scripts by design.
SCRIPT_UNICODE_NAMES: dict[str, tuple[str, ...]] = {
    "Latn": ("Latin",),
    "Cyrl": ("Cyrillic",),
    "Arab": ("Arabic",),
    "Grek": ("Greek",),
    "Hebr": ("Hebrew",),
    "Armn": ("Armenian",),
    "Geor": ("Georgian",),
    "Ethi": ("Ethiopic",),
    "Deva": ("Devanagari",),
    "Beng": ("Bengali",),
    "Guru": ("Gurmukhi",),
    "Gujr": ("Gujarati",),
    "Orya": ("Oriya",),
    "Taml": ("Tamil",),
    "Telu": ("Telugu",),
    "Knda": ("Kannada",),
    "Mlym": ("Malayalam",),
    "Sinh": ("Sinhala",),
    "Thai": ("Thai",),
    "Laoo": ("Lao",),
    "Khmr": ("Khmer",),
    "Mymr": ("Myanmar",),
    "Hans": ("Han",),
    "Hant": ("Han",),
    "Jpan": ("Han", "Hiragana", "Katakana"),
    "Kore": ("Hangul", "Han"),
}
# Scripts written without spaces between words: lengths are counted in characters there.
UNSPACED_SCRIPTS = frozenset({"Hans", "Hant", "Jpan", "Thai", "Laoo", "Khmr", "Mymr"})

# The label fields each language file lists under [lid]: one per member of workbench/filter/members.py
# MEMBERS that has a label_field.
LID_MODELS: tuple[str, ...] = tuple(LABEL_FIELDS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _LidLabelsBase(_Strict):
    def covered_by(self) -> list[str]:
        return [m for m in LID_MODELS if getattr(self, m) != UNSUPPORTED]


# The label each language-ID model uses for this language, or "unsupported": one required field
# per labelled member of workbench.filter.members.MEMBERS.
LidLabels = create_model("LidLabels", __base__=_LidLabelsBase, **{name: (str, ...) for name in LID_MODELS})


class Language(_Strict):
    code: str = Field(pattern=r"^[a-z]{2,3}$")
    iso639_3: str = Field(pattern=r"^[a-z]{3}$")
    name: str = Field(min_length=1)
    native_name: str = Field(min_length=1)
    scripts: tuple[str, ...] = Field(min_length=1)
    cc100_tokens_m: float | None = Field(default=None, ge=0)
    cc100_gib: float | None = Field(default=None, ge=0)
    tier: Tier
    role: Literal["generate", "eval_only"] = "generate"
    miracl: bool = False
    miracl_low_resource: bool = False
    tatoeba: str | None = Field(default=None, pattern=r"^[a-z]{3}$")
    confusable_group: str | None = None
    # Strict LID by default: a neighbour's label is never accepted as this language, except the
    # codes listed here (genuinely inseparable pluricentric cases), with the reason why.
    accept_also: tuple[str, ...] = ()
    accept_also_reason: str = ""
    # Per-language LID settings (FineWeb-2 style); None = the run's [filter] value.
    lid_threshold: float | None = Field(default=None, gt=0, le=1)
    lid_min_prob: float | None = Field(default=None, ge=0, le=1)
    quota: int = Field(ge=0)
    prompt_note: str = ""
    lid: LidLabels
    lid_note: str = ""
    sources: dict[str, str] = Field(default_factory=dict)

    @field_validator("scripts")
    @classmethod
    def _known_scripts(cls, scripts: tuple[str, ...]) -> tuple[str, ...]:
        for script in scripts:
            if script not in SCRIPT_UNICODE_NAMES:
                close = suggest_script(script)
                hint = f" (did you mean '{close}'?)" if close else ""
                raise ValueError(f"'{script}' is not an ISO 15924 code this registry knows{hint}")
        return scripts

    @model_validator(mode="after")
    def _consistent(self) -> "Language":
        if self.role == "generate":
            if self.cc100_tokens_m is None:
                raise ValueError("field 'cc100_tokens_m': required for a generation language")
            expected = tier_for_tokens(self.cc100_tokens_m)
            if self.tier != expected:
                raise ValueError(
                    f"field 'tier': '{self.tier}' but {self.cc100_tokens_m:g}M CC-100 tokens make it "
                    f"'{expected}' (high >= {HIGH_TIER_MIN_M}M, mid >= {MID_TIER_MIN_M}M)"
                )
        elif self.quota != 0:
            raise ValueError("field 'quota': an eval_only language has no generation quota; set 0")
        if not self.lid.covered_by() and not self.lid_note:
            raise ValueError("field 'lid': no LID model covers this language; say why in 'lid_note'")
        if self.accept_also and not self.accept_also_reason.strip():
            raise ValueError("field 'accept_also_reason': required when 'accept_also' lists languages; say why "
                             "LID cannot separate them")
        if self.code in self.accept_also:
            raise ValueError(f"field 'accept_also': lists the language itself ('{self.code}')")
        return self

    @property
    def generates(self) -> bool:
        return self.role == "generate"

    @property
    def unspaced(self) -> bool:
        return any(s in UNSPACED_SCRIPTS for s in self.scripts)


def suggest_script(value: str) -> str | None:
    """The ISO 15924 code a mistyped one most likely meant (``latn`` -> ``Latn``), or None."""
    close = difflib.get_close_matches(value.capitalize(), SCRIPT_UNICODE_NAMES, n=1)
    return close[0] if close else None


# Codes people type for a language that are not its ISO 639-1 code: country codes and
# withdrawn ISO codes. Used only for "did you mean", never accepted silently.
COMMON_MISTAKES = {"jp": "ja", "cn": "zh", "kr": "ko", "gr": "el", "dk": "da", "se": "sv", "cz": "cs",
                   "ua": "uk", "vn": "vi", "iw": "he", "ji": "yi", "jw": "jv", "in": "id", "ir": "fa",
                   "zh-cn": "zh", "pt-br": "pt", "en-us": "en", "en-gb": "en"}


def tier_for_tokens(tokens_m: float) -> str:
    if tokens_m >= HIGH_TIER_MIN_M:
        return "high"
    if tokens_m >= MID_TIER_MIN_M:
        return "mid"
    return "low"


class Registry:
    """All languages, by code, in file-name order."""

    def __init__(self, languages: Iterable[Language], directory: Path):
        self.directory = directory
        self.by_code: dict[str, Language] = {lang.code: lang for lang in languages}

    def __iter__(self):
        return iter(self.by_code.values())

    def __len__(self) -> int:
        return len(self.by_code)

    def __contains__(self, code: object) -> bool:
        return code in self.by_code

    def fingerprint(self) -> str:
        """A hash of every language file's content as loaded: editing one changes it."""
        payload = [lang.model_dump(mode="json") for lang in self]
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def get(self, code: str) -> Language:
        try:
            return self.by_code[code]
        except KeyError:
            close = self.suggest(code)
            hint = f"did you mean {', '.join(close)}?" if close else "see 'workbench languages'"
            raise UnknownLanguageError(
                f"unknown language code '{code}'", where="languages", fix=hint
            ) from None

    def suggest(self, token: str) -> list[str]:
        """What a token that is not a code most likely meant: ``SW``/``swa``/``swahili`` -> ``sw``."""
        folded = token.strip().lower()
        if folded in self.by_code:
            return [folded]
        if folded in (*TIERS, "all", "miracl"):
            return [folded]
        exact = [lang.code for lang in self if folded in (lang.iso639_3, lang.name.lower(), lang.native_name.lower())]
        if COMMON_MISTAKES.get(folded) in self.by_code:
            exact.append(COMMON_MISTAKES[folded])
        if exact:
            return exact
        names = {lang.name.lower(): lang.code for lang in self}
        prefixed = [code for name, code in names.items() if len(folded) >= 3 and name.startswith(folded)]
        if prefixed:
            return prefixed[:3]
        by_name = [names[n] for n in difflib.get_close_matches(folded, names, n=2, cutoff=0.75)]
        return by_name or difflib.get_close_matches(folded, self.by_code, n=3)

    @property
    def generation(self) -> list[Language]:
        return [lang for lang in self if lang.generates]

    @property
    def miracl(self) -> list[Language]:
        return [lang for lang in self if lang.miracl]

    def accept_also(self, code: str) -> set[str]:
        """Codes whose LID label is accepted as ``code`` even in strict mode (the file's ``accept_also``)."""
        return set(self.get(code).accept_also)

    def confusables(self, code: str) -> set[str]:
        group = self.get(code).confusable_group
        if not group:
            return set()
        return {lang.code for lang in self if lang.confusable_group == group and lang.code != code}

    def select(self, selectors: Iterable[str]) -> list[Language]:
        """Resolve codes, tiers (``high``/``mid``/``low``), ``miracl`` or ``all`` to languages.

        ``all`` and tiers mean generation languages; an eval-only language is only taken by code
        or by ``miracl``.
        """
        chosen: dict[str, Language] = {}
        for raw in selectors:
            for token in str(raw).replace(",", " ").split():
                if token == "all":
                    picked = self.generation
                elif token in TIERS:
                    picked = [lang for lang in self.generation if lang.tier == token]
                elif token == "miracl":
                    picked = self.miracl
                else:
                    picked = [self.get(token)]
                chosen.update((lang.code, lang) for lang in picked)
        return list(chosen.values())


def languages_dir() -> Path:
    """Where the language files are: $WORKBENCH_LANGUAGES, a checkout, or an installed copy."""
    return data_dir("languages", "WORKBENCH_LANGUAGES")


def load_language(path: Path) -> Language:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", where=str(path), fix="fix the syntax") from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", where=str(path)) from None
    try:
        language = Language.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_first_problem(err), where=str(path)) from None
    if language.code != path.stem:
        raise ConfigError(
            f"field 'code': '{language.code}' does not match the file name",
            where=str(path),
            fix=f"rename the file to {language.code}.toml or fix the code",
        )
    return language


def _first_problem(err: ValidationError) -> str:
    problem = err.errors()[0]
    location = ".".join(str(part) for part in problem["loc"])
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "missing":
        return f"field '{location}': required but missing"
    if problem["type"] == "extra_forbidden":
        return f"field '{location}': not a known field (check the spelling)"
    if message.startswith("field '"):
        return message
    where = f"field '{location}': " if location else ""
    return f"{where}{message}"


@lru_cache(maxsize=4)
def _load_cached(directory: Path) -> Registry:
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise ConfigError("no language files (*.toml) found", where=str(directory))
    registry = Registry((load_language(path) for path in files), directory)
    for language in registry:
        unknown = [code for code in language.accept_also if code not in registry]
        if unknown:
            raise ConfigError(f"field 'accept_also': unknown language code(s) {', '.join(unknown)}",
                              where=str(directory / f"{language.code}.toml"), fix="use registry codes (file names)")
    return registry


def load_registry(directory: Path | str | None = None) -> Registry:
    return _load_cached(Path(directory) if directory else languages_dir())


def registry_listing(registry: Registry, *, tier: str | None = None, miracl: bool = False, script: str | None = None,
                     eval_only: bool | None = None) -> list[dict[str, object]]:
    """``workbench languages``: one record per language that passes the filters (``eval_only`` None:
    both roles), every column the listing shows; an unknown tier or script is one line naming the
    option, with the closest valid spelling."""
    from workbench.errors import WorkbenchError

    if tier is not None and tier not in TIERS:
        fix = f"did you mean {tier.lower()}?" if tier.lower() in TIERS else "use high, mid or low"
        raise WorkbenchError(f"unknown tier '{tier}'", where="--tier", fix=fix)
    if script is not None and script not in SCRIPT_UNICODE_NAMES:
        close = suggest_script(script)
        raise WorkbenchError(f"'{script}' is not an ISO 15924 code this registry knows", where="--script",
                             fix=f"did you mean {close}?" if close else "e.g. Latn, Cyrl, Arab")
    return [
        {
            "code": lang.code,
            "iso639_3": lang.iso639_3,
            "name": lang.name,
            "native_name": lang.native_name,
            "scripts": "+".join(lang.scripts),
            "tier": lang.tier,
            "cc100_tokens_m": lang.cc100_tokens_m,
            "role": lang.role,
            "miracl": lang.miracl,
            "tatoeba": lang.tatoeba or "",
            "confusable_group": lang.confusable_group or "",
            "quota": lang.quota,
            "lid_models": len(lang.lid.covered_by()),
        }
        for lang in registry
        if (tier is None or lang.tier == tier)
        and (not miracl or lang.miracl)
        and (script is None or script in lang.scripts)
        and (eval_only is None or (lang.role == "eval_only") == eval_only)
    ]
