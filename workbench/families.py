"""The six task families of the E5-mistral recipe (Wang et al. 2024, §3.1 and appendix C).

Declared once here and used by planning, generation, filtering and training: field names,
paper proportions, whether the family has a brainstorm step, and the placeholder vocabularies
each generation prompt samples from.
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


@dataclass(frozen=True)
class Family:
    name: FamilyName
    title: str
    paper_count: int  # examples of this family in the paper's ~500k
    fields: tuple[str, ...]  # JSON keys of one generated example
    brainstorm: bool  # two-step (brainstorm tasks, then example) or one step
    placeholders: dict[str, tuple[str, ...]] = field(default_factory=dict)


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
        ),
        Family(
            "long_short",
            "long-short classification",
            122_000,
            ("input_text", "label", "misleading_label"),
            True,
            {"clarity": CLARITIES, "num_words": CLASSIFICATION_NUM_WORDS, "difficulty": DIFFICULTIES},
        ),
        Family("short_short", "short-short matching", 13_000, ("input", "positive_document"), True),
        Family("long_long", "long-long matching", 17_000, ("input", "positive_document"), True),
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
        ),
    )
}

FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)
PAPER_TOTAL = sum(f.paper_count for f in FAMILIES.values())


def family_shares(names: tuple[str, ...] | list[str] = FAMILY_NAMES) -> dict[str, float]:
    """The paper's mix restricted to ``names``, renormalised to sum to 1."""
    total = sum(FAMILIES[n].paper_count for n in names)
    return {n: FAMILIES[n].paper_count / total for n in names}
