"""Rules per task family: plain functions over one generated row that return reason codes.

A rule returns a list of reason codes; an empty list means "keep". Codes are ``name`` or
``name:field`` with ``name`` from :data:`REASONS`. Language checks (script share and the LID
ensemble) are rules too: :func:`check_row` runs every rule for one row and also returns the LID
votes so the reject table shows why a row was dropped.

Which fields a rule looks at comes from the row's :class:`workbench.families.Family` (its roles
and pair rules). Which language each field must be in: the row's language, except for a
cross-lingual family (bitext), where the query ``S1`` is in the row's language and ``S2``/``S3``
are in the plan's ``target_language`` (English for every language but English).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import regex

from workbench.families import FAMILIES
from workbench.filter.lid import Ensemble
from workbench.filter.script import letter_count, letters_of, script_share, text_letters, words
from workbench.languages import Registry

# The closed vocabulary of reason codes (the part before ':').
REASONS: dict[str, str] = {
    "missing_field": "a field of the family is missing or empty",
    "too_short": "a field is shorter than filter.min_words (characters x unspaced_chars_per_word for unspaced scripts)",
    "too_long": "a field is longer than filter.max_words",
    "long_long_too_short": "long-long input or document shorter than filter.long_long_min_words",
    "positive_equals_negative": "positive and negative (or label and misleading label, S2 and S3) are the same text",
    "query_copied": "the query/input appears verbatim in its positive document (or equals it)",
    "placeholder": "a leftover template placeholder such as {query} or [insert ...]",
    "refusal": "refusal or assistant boilerplate instead of content",
    "no_text": "a field that carries no text: fewer than filter.min_text_letters letters, letters under "
               "filter.min_text_share of its characters, a bare {...}/[...] structure or a non-answer such as N/A "
               "(fields the family declares numeric are exempt)",
    "wrong_script": "too few letters in the expected script (filter.script_threshold)",
    "wrong_language": "a majority of the LID ensemble names another language (neighbours too, unless accept_also)",
    "lid_uncertain": "no clear LID majority for the expected language (a tie or split vote); the votes are kept",
    "exact_duplicate": "same normalised text as an earlier row of this language (query or whole example)",
    "near_duplicate": "MinHash Jaccard >= filter.near_threshold with an earlier row (query or whole example)",
}

_PLACEHOLDER = regex.compile(
    r"\{\{?\s*[A-Za-z_][A-Za-z0-9_ ]{0,40}\}?\}"  # {query}, {{ task }}
    r"|\[(?:insert|your|add|placeholder|query|document|text)[^\]]{0,60}\]"  # [insert text here]
    r"|<(?:insert|placeholder|your)[^>]{0,60}>"
    r"|\blorem ipsum\b",
    regex.IGNORECASE,
)
_REFUSAL = regex.compile(
    r"\bas an ai(?: language)? model\b|\bi(?:'m| am) sorry,? but\b|\bi can(?:not|'t) (?:help|assist|fulfill|comply|provide|create|generate)\b"
    r"|\bi(?:'m| am) (?:not able|unable) to\b|\bi apologi[sz]e\b|\bhere is (?:the|a|an) (?:json|example)\b",
    regex.IGNORECASE,
)
_NON_WORD = regex.compile(r"[\p{P}\p{S}\s]+")
# A field that is a data structure or a quote/bracket, not text: {...}, [...], a lone "{" or "'".
_STRUCTURE = regex.compile(r"\A\s*(?:[\[{].*[\]}]|[\[{(\"'`<]+|[\]})\"'`>]+)\s*\Z", regex.DOTALL)
# Whole-field non-answers a generator writes when it has nothing to say (matched case-insensitively).
NON_ANSWERS = frozenset({"n/a", "n.a.", "null", "none", "nil", "nan", "undefined", "tbd"})


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation and whitespace runs collapsed to one space."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def length_of(text: str, unspaced: bool, chars_per_word: float) -> float:
    """Words, or characters / chars_per_word for unspaced scripts (counted as word equivalents)."""
    if unspaced:
        return len(regex.sub(r"\s+", "", text)) / chars_per_word
    return len(words(text))


@dataclass(frozen=True)
class Verdict:
    reasons: tuple[str, ...]
    lid_language: str | None
    lid_support: float | None
    votes: tuple[tuple[str, str, str, float], ...]  # (field, member, label, prob)
    lid_accepted_as: str | None = None  # an accept_also language the row's language was accepted as


def field_languages(row: dict, family: str) -> dict[str, str]:
    return FAMILIES[family].field_languages(row["language"], row.get("target_language"))


def rule_fields_present(row: dict, family: str) -> list[str]:
    return [f"missing_field:{f}" for f in FAMILIES[family].fields if not (row.get(f) or "").strip()]


def rule_lengths(row: dict, family: str, section, unspaced: dict[str, bool]) -> list[str]:
    out = []
    for name in FAMILIES[family].fields:
        text = row.get(name) or ""
        if not text.strip():
            continue
        size = length_of(text, unspaced[name], section.unspaced_chars_per_word)
        low = section.min_words.get(f"{family}.{name}", section.min_words.get(name, 1))
        high = section.max_words.get(f"{family}.{name}", section.max_words.get(name, 10_000))
        if size < low:
            out.append(f"too_short:{name}")
        elif size > high:
            out.append(f"too_long:{name}")
        if FAMILIES[family].long_texts and size < section.long_long_min_words:
            out.append(f"long_long_too_short:{name}")
    return out


def rule_distinct_pairs(row: dict, family: str) -> list[str]:
    pair = FAMILIES[family].distinct_pair
    if pair is None:
        return []
    a, b = (row.get(f) or "" for f in pair)
    if not a.strip() or abs(len(a) - len(b)) > 0.2 * max(len(a), len(b)) + 10:
        return []  # lengths too different to normalise to the same text: skip the costly check
    return ["positive_equals_negative"] if normalise(a) == normalise(b) else []


def rule_query_copied(row: dict, family: str, section, unspaced: bool) -> list[str]:
    roles = FAMILIES[family]
    if roles.query_copy is None:
        return []
    raw_query, raw_document = row.get(roles.query) or "", row.get(roles.positive) or ""
    words = normalise(raw_query).split()
    if not words or max(words, key=len) not in unicodedata.normalize("NFKC", raw_document).casefold():
        return []  # its longest word is not even in the document: no copy (cheap pre-check)
    query, document = " ".join(words), normalise(raw_document)
    if not document:
        return []
    if query == document:
        return ["query_copied"]
    long_enough = length_of(query, unspaced, section.unspaced_chars_per_word) >= section.min_copied_query_words
    if roles.query_copy == "contained" and long_enough and f" {query} " in f" {document} ":
        return ["query_copied"]
    return []


def rule_boilerplate(row: dict, family: str) -> list[str]:
    out = []
    for name in FAMILIES[family].fields:
        text = row.get(name) or ""
        if _PLACEHOLDER.search(text):
            out.append(f"placeholder:{name}")
        if _REFUSAL.search(text):
            out.append(f"refusal:{name}")
    return out


def is_text(text: str, section, letters: str | None = None) -> bool:
    """Does a (non-empty) field carry text? At least ``min_text_letters`` letters, letters at least
    ``min_text_share`` of its visible characters, not a bare structure, not a non-answer (``N/A``).

    Thresholds measured on 124,158 real texts (benchmarks/lid_accuracy.py --text-floor: Tatoeba in 75
    languages, MIRACL queries and Yoruba passages, XQuAD questions and paragraphs): the lowest letter
    share is 0.363, none is below 0.3; 12 are rejected: a one-character Chinese sentence ("行。") and
    11 Yoruba Wikipedia passages that are only ``[[Category:...]]`` markup.
    ``letters``: :func:`letters_of` ``text`` when already known (most texts pass on it alone).
    """
    plain = len(letters_of(text) if letters is None else letters)
    # letters alone already reach both bounds (marks only add, visible characters <= len(text))
    if not (plain >= section.min_text_letters and plain >= section.min_text_share * len(text)):
        with_marks, visible = text_letters(text)
        if with_marks < section.min_text_letters or with_marks < section.min_text_share * visible:
            return False
    return _STRUCTURE.match(text) is None and text.strip().casefold() not in NON_ANSWERS


def rule_carries_text(row: dict, family: str, section, letters: dict[str, str] | None = None) -> list[str]:
    """``no_text:F`` for each field that carries no text (:func:`is_text`), except numeric fields."""
    numeric = FAMILIES[family].numeric_fields
    letters = letters or {}
    return [f"no_text:{f}" for f in FAMILIES[family].fields
            if f not in numeric and (row.get(f) or "").strip() and not is_text(row[f], section, letters.get(f))]


def lid_reasons(decision, names: list[str], short: bool) -> list[str]:
    """Reject reasons of one LID decision over ``names`` (one field, or the joined short fields).

    Short fields are too short for a clear vote (a split vote on two Swahili words is the norm,
    benchmarks/lid_accuracy.py --short), so a split vote alone does not reject them; they are
    rejected when one other language holds a majority, when English gets more votes than the
    language, or when a confusable neighbour gets votes and the two likely wrong answers together
    (neighbour and English) get at least as many as the language. (Chosen on the Tatoeba fitting
    half among: "at least as many" for both, this, "more" for both.)
    """
    if decision.accepted is None or decision.accepted:
        return []
    tie = 1e-3  # the shares are rounded to 4 decimals: equal within it is a tie
    if short and (decision.english > decision.support + tie
                  or (decision.neighbour > 0 and decision.english + decision.neighbour > decision.support - tie)):
        return [f"wrong_language:{name}" for name in names]
    if decision.uncertain:
        return [] if short else [f"lid_uncertain:{name}" for name in names]
    return [f"wrong_language:{name}" for name in names]


def check_row(row: dict, registry: Registry, ensemble: Ensemble, section) -> Verdict:
    """All rules for one generated row (status ok), language checks included; dedup is separate.

    Language checks: every field gets the script check. Fields with at least ``min_lid_letters``
    letters get their own LID vote; the shorter fields of the same language (a query, a label) are
    voted on together, over their concatenation, when it has at least ``min_short_lid_letters``
    letters, so a short English query in a Swahili slot is caught (see :func:`lid_reasons`). The
    vote key of a combined vote is the fields joined by ``+`` (e.g. ``label+misleading_label``).
    """
    family = row["family"]
    languages = field_languages(row, family)
    unspaced = {f: registry.get(code).unspaced for f, code in languages.items()}
    reasons = rule_fields_present(row, family)
    reasons += rule_lengths(row, family, section, unspaced)
    reasons += rule_distinct_pairs(row, family)
    reasons += rule_query_copied(row, family, section, unspaced[FAMILIES[family].query])
    reasons += rule_boilerplate(row, family)
    letters = {name: letters_of(row.get(name) or "") for name in languages}  # one pass per field
    not_text = rule_carries_text(row, family, section, letters)
    reasons += not_text
    skip = {reason.partition(":")[2] for reason in not_text}
    votes: list[tuple[str, str, str, float]] = []
    lid_language = accepted_as = None
    supports: list[float] = []
    main = FAMILIES[family].main_field
    short: dict[str, list[str]] = {}  # language -> its short fields
    voted: list[tuple[list[str], str, str, bool]] = []  # (fields, language, text, short) to vote on
    for name, code in languages.items():
        text = row.get(name) or ""
        if not text.strip() or name in skip:
            continue  # missing or not text: no language to check
        share = script_share(text, registry.get(code).scripts, letters[name])
        if share is not None and share < section.script_threshold:
            reasons.append(f"wrong_script:{name}")
        seen = len(letters[name]) if len(text) <= section.lid_max_chars else letter_count(text[: section.lid_max_chars])
        if seen < section.min_lid_letters:
            short.setdefault(code, []).append(name)
        else:
            voted.append(([name], code, text, False))
    for code, names in short.items():
        text = "\n".join(row[name].strip() for name in names)
        if letter_count(text) >= section.min_short_lid_letters:
            voted.append((names, code, text, True))
        # else: a number, a code, a word or two: too little for any LID; the script check decides
    for names, code, text, is_short in voted:
        decision = ensemble.decide(text, code)
        key = "+".join(names)
        votes += [(key, v.member, v.label, v.prob) for v in decision.votes]
        if code == row["language"] and (main in names or lid_language is None):
            lid_language = decision.seen_as
        if code == row["language"] and decision.accepted_as and accepted_as is None:
            accepted_as = decision.accepted_as
        if decision.accepted is None:
            continue
        supports.append(decision.support)
        reasons += lid_reasons(decision, names, is_short)
    return Verdict(tuple(reasons), lid_language, min(supports) if supports else None, tuple(votes), accepted_as)


def lone_field_reasons(text: str, code: str, registry: Registry, ensemble: Ensemble, section,
                       votes=None) -> list[str]:
    """The language reasons :func:`check_row` gives a field that is its example's only field in
    ``code`` (no_text, wrong_script, then the LID vote, short or long): what the benchmarks judge.
    ``votes`` are every member's votes (:meth:`Ensemble.votes`); without them members are asked lazily."""
    if not text.strip():
        return []
    if not is_text(text, section):
        return ["no_text:field"]
    reasons = []
    share = script_share(text, registry.get(code).scripts)
    if share is not None and share < section.script_threshold:
        reasons.append("wrong_script:field")
    short = letter_count(text[: section.lid_max_chars]) < section.min_lid_letters
    if short and letter_count(text) < section.min_short_lid_letters:
        return reasons
    return reasons + lid_reasons(ensemble.decide(text.strip() if short else text, code, votes), ["field"], short)
