"""The six task families of the E5-mistral recipe (Wang et al. 2024, §3.1 and appendix C).

The only place that knows a family's shape. Planning, generation, filtering, the audit, training
and the test-data builder all read it: field names, paper proportions, whether the family has a
brainstorm step, the placeholder vocabularies each generation prompt samples from, and the roles
of the fields (query, positive, hard negative), the pair rules the filter applies, whether the
family is symmetric or cross-lingual, and the instruction used when a row has no task.

Adding a family: one ``Family(...)`` below, its prompt templates under ``prompts/``, and a
row recipe in ``workbench/testing/samples.py`` for the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FamilyName = Literal["short_long", "long_short", "short_short", "long_long", "sts", "bitext"]

# Placeholder vocabularies, verbatim from the paper's prompt templates.
QUERY_TYPES = ("extremely long-tail", "long-tail", "common")
QUERY_LENGTHS = ("less than 5 words", "5 to 15 words", "at least 10 words")
CLARITIES = ("clear", "understandable with some effort", "ambiguous")
RETRIEVAL_NUM_WORDS = ("50", "100", "200", "300", "400", "500")
CLASSIFICATION_NUM_WORDS = ("less than 10", "at least 10", "at least 50", "at least 100", "at least 200")
DIFFICULTIES = ("high school", "college", "PhD")
STS_DIFFICULTIES = ("elementary school", "high school", "college")
UNITS = ("sentence", "phrase", "passage")
STS_HIGH_SCORES = ("4", "4.5", "5")
STS_LOW_SCORES = ("2.5", "3", "3.5")
BITEXT_HIGH_SCORES = ("4", "4.5", "5")
BITEXT_LOW_SCORES = ("1.5", "2", "2.5")

# Every placeholder column a plan table can carry (nullable: a family uses a subset).
PLACEHOLDER_COLUMNS = (
    "query_type",
    "query_length",
    "clarity",
    "num_words",
    "difficulty",
    "high_score",
    "low_score",
    "unit",
    "target_language",
)

# Every example field any family produces (one nullable string column each in generated/).
EXAMPLE_FIELDS = (
    "user_query",
    "positive_document",
    "hard_negative_document",
    "input_text",
    "label",
    "misleading_label",
    "input",
    "S1",
    "S2",
    "S3",
)


# Words an answer is asked for, per piece (what the prompts ask; generate/budget.py turns words into tokens).
UNIT_WORDS = {"phrase": 8, "sentence": 25, "passage": 120}
SHORT_TEXT_WORDS = 25  # a query, title or sentence
LONG_LONG_WORDS = 300  # "at least 300 words" per long-long document
LABEL_WORDS = 10  # label + misleading label


def _leading_int(text: str | None, default: int) -> int:
    digits = "".join(ch for ch in (text or "") if ch.isdigit())
    return int(digits) if digits else default


@dataclass(frozen=True)
class AnswerSize:
    """Words one example answer is asked to contain: ``fixed`` words, plus ``num_words_times`` copies
    of the slot's ``num_words`` (its number; ``num_words_default`` when absent), plus ``unit_times``
    copies of the slot's ``unit`` length (:data:`UNIT_WORDS`)."""

    fixed: int = 0
    num_words_times: int = 0
    num_words_default: int = 0
    unit_times: int = 0

    def words(self, slot: dict) -> int:
        total = self.fixed
        if self.num_words_times:
            total += self.num_words_times * _leading_int(slot.get("num_words"), self.num_words_default)
        if self.unit_times:
            total += self.unit_times * UNIT_WORDS.get(slot.get("unit") or "passage", UNIT_WORDS["passage"])
        return total


@dataclass(frozen=True)
class Family:
    """One task family; field roles as the E5-mistral paper trains on them (Wang et al. 2024, §3)."""

    name: FamilyName
    title: str
    paper_count: int  # examples of this family in the paper's ~500k
    fields: tuple[str, ...]  # JSON keys of one generated example
    brainstorm: bool  # two-step (brainstorm tasks, then example) or one step
    placeholders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    query: str = ""  # the field that becomes the query (gets the instruction); also dedup's and the audit's main text
    positive: str = ""
    negative: str | None = None  # None: no hard negative, trained on in-batch negatives only
    symmetric: bool = False  # query and documents are the same kind of text (sts, bitext)
    cross_lingual: bool = False  # the query is in the row's language, the other fields in the plan's target_language
    # filter pair rules: "equal" rejects a query whose normalised text equals its positive; "contained"
    # also rejects a long-enough query found verbatim inside its positive; None: no copy check
    query_copy: Literal["equal", "contained"] | None = None
    long_texts: bool = False  # every field must reach filter.long_long_min_words
    # instruction when a row has no brainstormed task (overridable as train.<name>_instruction)
    default_instruction: str | None = None
    answer: AnswerSize | None = None  # how long one answer is asked to be (sizes max_tokens)
    # what each field's text is, in the order of ``fields`` (test-data builders fill fields by it):
    # "short" a query or sentence, "document" a passage, "long" a long-long text, "label" a short
    # class label, "sentence" one of a set of distinct sentences
    shapes: tuple[str, ...] = ()
    # fields whose answer may be a number (a year, a score): exempt from the filter's no_text rule (a
    # number has no language; letters in them are still checked). None of the paper's families has one.
    numeric_fields: tuple[str, ...] = ()

    @property
    def main_field(self) -> str:
        """The text dedup compares and the audit's distinct-n looks at: the query."""
        return self.query

    @property
    def distinct_pair(self) -> tuple[str, str] | None:
        """Positive and hard negative, which must differ (filter: ``positive_equals_negative``)."""
        return (self.positive, self.negative) if self.negative else None

    def field_languages(self, language: str, target_language: str | None) -> dict[str, str]:
        """Language code each field must be in."""
        if self.cross_lingual and target_language:
            return {f: (language if f == self.query else target_language) for f in self.fields}
        return {f: language for f in self.fields}


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "short_long",
            "short-long retrieval",
            167_000,
            ("user_query", "positive_document", "hard_negative_document"),
            True,
            {
                "query_type": QUERY_TYPES,
                "query_length": QUERY_LENGTHS,
                "clarity": CLARITIES,
                "num_words": RETRIEVAL_NUM_WORDS,
                "difficulty": DIFFICULTIES,
            },
            query="user_query",
            positive="positive_document",
            negative="hard_negative_document",
            query_copy="contained",
            answer=AnswerSize(fixed=SHORT_TEXT_WORDS, num_words_times=2, num_words_default=500),  # query + 2 documents
            shapes=("short", "document", "document"),
        ),
        Family(
            "long_short",
            "long-short classification",
            122_000,
            ("input_text", "label", "misleading_label"),
            True,
            {"clarity": CLARITIES, "num_words": CLASSIFICATION_NUM_WORDS, "difficulty": DIFFICULTIES},
            query="input_text",
            positive="label",
            negative="misleading_label",
            answer=AnswerSize(fixed=LABEL_WORDS, num_words_times=1, num_words_default=200),
            shapes=("document", "label", "label"),
        ),
        Family(
            "short_short",
            "short-short matching",
            13_000,
            ("input", "positive_document"),
            True,
            query="input",
            positive="positive_document",
            query_copy="equal",
            answer=AnswerSize(fixed=2 * SHORT_TEXT_WORDS),
            shapes=("short", "short"),
        ),
        Family(
            "long_long",
            "long-long matching",
            17_000,
            ("input", "positive_document"),
            True,
            query="input",
            positive="positive_document",
            query_copy="equal",
            long_texts=True,
            answer=AnswerSize(fixed=2 * LONG_LONG_WORDS),
            shapes=("long", "long"),
        ),
        Family(
            "sts",
            "semantic textual similarity",
            99_000,
            ("S1", "S2", "S3"),
            False,
            {
                "high_score": STS_HIGH_SCORES,
                "low_score": STS_LOW_SCORES,
                "unit": UNITS,
                "difficulty": STS_DIFFICULTIES,
            },
            query="S1",
            positive="S2",
            negative="S3",
            symmetric=True,
            query_copy="equal",
            default_instruction="Retrieve semantically similar text.",
            answer=AnswerSize(unit_times=3),
            shapes=("sentence", "sentence", "sentence"),
        ),
        Family(
            "bitext",
            "bitext retrieval",
            89_000,
            ("S1", "S2", "S3"),
            False,
            {
                "high_score": BITEXT_HIGH_SCORES,
                "low_score": BITEXT_LOW_SCORES,
                "unit": UNITS,
                "difficulty": STS_DIFFICULTIES,
            },
            query="S1",
            positive="S2",
            negative="S3",
            symmetric=True,
            cross_lingual=True,
            default_instruction="Retrieve parallel sentences.",
            answer=AnswerSize(unit_times=3),
            shapes=("short", "sentence", "sentence"),  # S1 in the language; S2, S3 in the target language
        ),
    )
}

FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)
PAPER_TOTAL = sum(f.paper_count for f in FAMILIES.values())


def family_shares(names: tuple[str, ...] | list[str] = FAMILY_NAMES) -> dict[str, float]:
    """The paper's mix restricted to ``names``, renormalised to sum to 1."""
    total = sum(FAMILIES[n].paper_count for n in names)
    return {n: FAMILIES[n].paper_count / total for n in names}
