"""Rules per task family: plain functions over one generated row's fields that return reason codes.

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
from workbench.filter.script import letter_count, letters_and_head, letters_of, script_share, text_letters, words
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

# The alternatives of the two patterns, one a line (a test reads them).
PLACEHOLDERS = (
    r"\{\{?\s*[A-Za-z_][A-Za-z0-9_ ]{0,40}\}?\}",  # {query}, {{ task }}
    r"\[(?:insert|your|add|placeholder|query|document|text)[^\]]{0,60}\]",  # [insert text here]
    r"<(?:insert|placeholder|your)[^>]{0,60}>",
    r"\blorem ipsum\b",
)
REFUSALS = (
    r"\bas an ai(?: language)? model\b",
    r"\bi(?:'m| am) sorry,? but\b",
    r"\bi can(?:not|'t) (?:help|assist|fulfill|comply|provide|create|generate)\b",
    r"\bi(?:'m| am) (?:not able|unable) to\b",
    r"\bi apologi[sz]e\b",
    r"\bhere is (?:the|a|an) (?:json|example)\b",
)
_PLACEHOLDER = regex.compile("|".join(PLACEHOLDERS), regex.IGNORECASE)
_REFUSAL = regex.compile("|".join(REFUSALS), regex.IGNORECASE)
# both, for the common case of a field with neither: one scan instead of two
_BOILERPLATE = regex.compile(f"(?:{_PLACEHOLDER.pattern})|(?:{_REFUSAL.pattern})", regex.IGNORECASE)
# Every alternative begins with "{", "[" or "<", or has an "i" in its literal beginning (lorem Ipsum, as
# an AI, I'm, here is), and under IGNORECASE only i, I and U+0130 match "i": a field with none of these
# (most fields in scripts other than Latin) cannot match and is not scanned (tested)
BOILERPLATE_NEEDS = ("i", "I", "{", "[", "<", "\u0130")
_NON_WORD = regex.compile(r"[\p{P}\p{S}\s]+")
_SPACES = regex.compile(r"\s+")
# white space to str.strip and str.split that the punctuation-and-space runs leave alone (U+001C-U+001F)
_UNCOLLAPSED = ("\x1c", "\x1d", "\x1e", "\x1f")
_UNCOLLAPSED_SPACE = regex.compile(r"[\x1c-\x1f]")
_ASCII_NON_WORD = str.maketrans({chr(c): " " for c in range(128) if _NON_WORD.match(chr(c))})
# A field that is a data structure or a quote/bracket, not text: {...}, [...], a lone "{" or "'".
_STRUCTURE = regex.compile(r"\A\s*(?:[\[{].*[\]}]|[\[{(\"'`<]+|[\]})\"'`>]+)\s*\Z", regex.DOTALL)
# Whole-field non-answers a generator writes when it has nothing to say (matched case-insensitively).
NON_ANSWERS = frozenset({"n/a", "n.a.", "null", "none", "nil", "nan", "undefined", "tbd"})
_LONGEST_NON_ANSWER = max(map(len, NON_ANSWERS))  # case folding never shortens a text


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation and whitespace runs collapsed to one space."""
    if text.isascii() and not any(space in text for space in _UNCOLLAPSED):
        # the same for ASCII, at str speed: it is its own NFKC form, folds as lower(), and once its
        # punctuation and symbols are spaces, splitting on white space collapses the runs
        return " ".join(text.lower().translate(_ASCII_NON_WORD).split())
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()




def normalise_lines(parts: list[str] | tuple[str, ...], norms: dict[str, str] | None = None) -> str:
    """``normalise("\\n".join(parts))`` from each part's normalisation (remembered in ``norms``, so a
    text shared by many examples is normalised once): NFKC and case folding do not reach across a
    newline, and the newline joins the runs of punctuation and space around it into the one space
    between two parts. A part with one of the separators U+001C-U+001F (which the runs leave but
    ``strip`` removes) is not split off: the parts are then joined first."""
    out = []
    for part in parts:
        norm = None if norms is None else norms.get(part)
        if norm is None:
            if _UNCOLLAPSED_SPACE.search(part):
                return normalise("\n".join(parts))
            norm = normalise(part)
            if norms is not None:
                norms[part] = norm
        if norm:
            out.append(norm)
    return " ".join(out)


def length_of(text: str, unspaced: bool, chars_per_word: float) -> float:
    """Words, or characters / chars_per_word for unspaced scripts (counted as word equivalents)."""
    if unspaced:
        return len(_SPACES.sub("", text)) / chars_per_word
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


@dataclass(frozen=True)
class _Field:
    """What the rules need to know about one field of a family in one language pair."""

    name: str
    code: str  # the language it must be in
    unspaced: bool
    scripts: tuple[str, ...]
    low: float  # filter.min_words / max_words for the field (family.field first)
    high: float
    numeric: bool  # exempt from no_text


@dataclass(frozen=True)
class _Plan:
    fields: tuple[_Field, ...]
    long_texts: bool
    query_unspaced: bool


_PLANS: dict[tuple, tuple] = {}


def _plan(registry: Registry, section, family: str, language: str, target: str | None) -> _Plan:
    """The family's fields with their languages, scripts and length bounds: looked up once per
    registry, section, family object and language pair. Each entry keeps the registry, section and
    family it was made from alive, so their ids cannot be reused by other objects while it is cached."""
    roles = FAMILIES[family]
    key = (id(registry), id(section), id(roles), family, language, target)
    cached = _PLANS.get(key)
    if cached is not None:
        return cached[-1]
    languages = roles.field_languages(language, target)
    fields = []
    for name, code in languages.items():
        spec = registry.get(code)
        fields.append(_Field(
            name, code, spec.unspaced, tuple(spec.scripts),
            section.min_words.get(f"{family}.{name}", section.min_words.get(name, 1)),
            section.max_words.get(f"{family}.{name}", section.max_words.get(name, 10_000)),
            name in roles.numeric_fields))
    plan = _Plan(tuple(fields), roles.long_texts, registry.get(languages[roles.query]).unspaced)
    if len(_PLANS) >= 4096:
        _PLANS.clear()
    _PLANS[key] = (registry, section, roles, plan)
    return plan


def _present(text: str) -> bool:
    """``bool(text.strip())`` without copying the text."""
    return bool(text) and not text.isspace()


def rule_fields_present(plan: _Plan, texts: list[str]) -> list[str]:
    return [f"missing_field:{field.name}" for field, text in zip(plan.fields, texts) if not _present(text)]


def rule_lengths(plan: _Plan, texts: list[str], section) -> list[str]:
    out = []
    for field, text in zip(plan.fields, texts):
        if not _present(text):
            continue
        size = length_of(text, field.unspaced, section.unspaced_chars_per_word)
        if size < field.low:
            out.append(f"too_short:{field.name}")
        elif size > field.high:
            out.append(f"too_long:{field.name}")
        if plan.long_texts and size < section.long_long_min_words:
            out.append(f"long_long_too_short:{field.name}")
    return out


def _normalised(text: str, norms: dict[str, str] | None) -> str:
    """:func:`normalise`, remembered in ``norms`` (one row's texts) when given."""
    if norms is None:
        return normalise(text)
    norm = norms.get(text)
    if norm is None:
        norm = norms[text] = normalise(text)
    return norm


def rule_distinct_pairs(row: dict, family: str, norms: dict[str, str] | None = None) -> list[str]:
    pair = FAMILIES[family].distinct_pair
    if pair is None:
        return []
    a, b = (row.get(f) or "" for f in pair)
    if not a.strip() or abs(len(a) - len(b)) > 0.2 * max(len(a), len(b)) + 10:
        return []  # lengths too different to normalise to the same text: skip the costly check
    return ["positive_equals_negative"] if _normalised(a, norms) == _normalised(b, norms) else []


def rule_query_copied(row: dict, family: str, section, unspaced: bool, norms: dict[str, str] | None = None) -> list[str]:
    roles = FAMILIES[family]
    if roles.query_copy is None:
        return []
    raw_query, raw_document = row.get(roles.query) or "", row.get(roles.positive) or ""
    words = _normalised(raw_query, norms).split()
    if not words or max(words, key=len) not in unicodedata.normalize("NFKC", raw_document).casefold():
        return []  # its longest word is not even in the document: no copy (cheap pre-check)
    query, document = " ".join(words), _normalised(raw_document, norms)
    if not document:
        return []
    if query == document:
        return ["query_copied"]
    long_enough = length_of(query, unspaced, section.unspaced_chars_per_word) >= section.min_copied_query_words
    if roles.query_copy == "contained" and long_enough and f" {query} " in f" {document} ":
        return ["query_copied"]
    return []


def _may_be_boilerplate(text: str) -> bool:
    """Has ``text`` a character every placeholder and refusal needs (:data:`BOILERPLATE_NEEDS`)?"""
    return "i" in text or "I" in text or "{" in text or "[" in text or "<" in text or "\u0130" in text


def rule_boilerplate(plan: _Plan, texts: list[str]) -> list[str]:
    out = []
    for field, text in zip(plan.fields, texts):
        if not _may_be_boilerplate(text) or _BOILERPLATE.search(text) is None:
            continue  # neither (most fields): one scan, or none
        if _PLACEHOLDER.search(text):
            out.append(f"placeholder:{field.name}")
        if _REFUSAL.search(text):
            out.append(f"refusal:{field.name}")
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
    if _STRUCTURE.match(text) is not None:
        return False
    stripped = text.strip()
    return len(stripped) > _LONGEST_NON_ANSWER or stripped.casefold() not in NON_ANSWERS


def rule_carries_text(plan: _Plan, texts: list[str], section, letters: list[str]) -> list[str]:
    """``no_text:F`` for each field that carries no text (:func:`is_text`), except numeric fields;
    ``letters``: :func:`letters_of` each text."""
    return [f"no_text:{field.name}" for field, text, known in zip(plan.fields, texts, letters)
            if not field.numeric and _present(text) and not is_text(text, section, known)]


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
    plan = _plan(registry, section, family, row["language"], row.get("target_language"))
    texts = [row.get(field.name) or "" for field in plan.fields]
    norms: dict[str, str] = {}  # each text normalised once for the rules that compare texts
    reasons = rule_fields_present(plan, texts)
    reasons += rule_lengths(plan, texts, section)
    reasons += rule_distinct_pairs(row, family, norms)
    reasons += rule_query_copied(row, family, section, plan.query_unspaced, norms)
    reasons += rule_boilerplate(plan, texts)
    # one pass per field: its letters, and how many of them LID sees (the first lid_max_chars characters)
    counted = [letters_and_head(text, section.lid_max_chars) for text in texts]
    letters = [known for known, _ in counted]
    not_text = rule_carries_text(plan, texts, section, letters)
    reasons += not_text
    skip = {reason.partition(":")[2] for reason in not_text}
    votes: list[tuple[str, str, str, float]] = []
    lid_language = accepted_as = None
    supports: list[float] = []
    main = FAMILIES[family].main_field
    short: dict[str, list[str]] = {}  # language -> its short fields
    short_letters: dict[str, int] = {}  # language -> letters of its short fields
    voted: list[tuple[list[str], str, str, bool]] = []  # (fields, language, text, short) to vote on
    for field, text, (known, seen) in zip(plan.fields, texts, counted):
        if not _present(text) or field.name in skip:
            continue  # missing or not text: no language to check
        share = script_share(text, field.scripts, known)
        if share is not None and share < section.script_threshold:
            reasons.append(f"wrong_script:{field.name}")
        if seen < section.min_lid_letters:
            short.setdefault(field.code, []).append(field.name)
            short_letters[field.code] = short_letters.get(field.code, 0) + len(known)
        else:
            voted.append(([field.name], field.code, text, False))
    for code, names in short.items():
        if short_letters[code] >= section.min_short_lid_letters:  # the letters of the joined fields
            text = "\n".join(row[name].strip() for name in names)
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
