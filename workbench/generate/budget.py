"""Completion-token budgets per request: sized by family, ``num_words``/``unit`` and script.

A flat ``max_tokens`` (1,024 before) cuts long documents and non-Latin scripts short; a cut
answer is invalid JSON, so the kept data would lean towards short texts and Latin script. Here:

- :func:`target_words`: the words one answer is asked for (e.g. short-long with ``num_words``
  500: a query plus two documents of at least 500 words each);
- :data:`TOKENS_PER_WORD` / :data:`TOKENS_PER_WORD_O200K`: tokens one word of the script costs,
  measured on Tatoeba text with SmolLM2's tokenizer (the embedded server) and with o200k (every
  other endpoint), ``benchmarks/generation_budget.py``; words of unspaced scripts are
  characters / 1.5, as in the filter;
- :func:`completion_budget`: ``max_tokens`` of the request = target words × tokens per word ×
  :data:`HEADROOM` (models overshoot "at least N words") + the JSON's own tokens, capped by the
  endpoint's output limit and, where known, by its context window minus the prompt;
- :func:`expected_completion_tokens`: the dry run's estimate (target words × tokens per word ×
  :data:`OVERSHOOT`), sized the same way.

A truncated answer (``finish_reason == "length"``) is re-sent once with :func:`larger_budget`.
"""

from __future__ import annotations

import math
from typing import Any

from workbench.families import FAMILIES
from workbench.languages import Language

# Tokens per word: SmolLM2-135M's tokenizer on up to 2,000 Tatoeba sentences per registry language
# (benchmarks/generation_budget.py; the median language where a script has several, rounded up
# to 0.1). Hosted models with large multilingual vocabularies (o200k, Qwen) need fewer tokens in
# non-Latin scripts: ``generate.tokens_per_word`` overrides entries per script.
TOKENS_PER_WORD: dict[str, float] = {
    "Latn": 2.8, "Cyrl": 4.9, "Grek": 5.1, "Armn": 10.6, "Geor": 12.8, "Hebr": 6.1, "Arab": 5.5,
    "Deva": 6.2, "Beng": 10.0, "Taml": 14.2, "Telu": 18.1, "Mlym": 18.4, "Ethi": 11.4, "Kore": 8.1,
    "Hans": 2.7, "Jpan": 2.6, "Thai": 2.8, "Khmr": 3.2,
    # no Tatoeba text to measure: Brahmic scripts take the median of the measured Brahmic ones
    # (Deva, Beng, Taml, Telu, Mlym), unspaced South-East Asian ones the larger of Thai and Khmr
    "Gujr": 14.2, "Guru": 14.2, "Orya": 14.2, "Knda": 14.2, "Sinh": 14.2, "Laoo": 3.2, "Mymr": 3.2,
    "Hant": 2.7,
}
# The same measurement with OpenAI's o200k_base (GPT-4o family), used for every endpoint other
# than the embedded server: large multilingual vocabularies (o200k, Qwen, Llama 3) need far fewer
# tokens outside Latin script. A model whose tokenizer is costlier gets a truncated answer
# re-sent with twice the budget, or ``generate.tokens_per_word`` per script.
TOKENS_PER_WORD_O200K: dict[str, float] = {
    "Latn": 1.9, "Cyrl": 2.2, "Grek": 2.4, "Armn": 2.2, "Geor": 2.7, "Hebr": 2.3, "Arab": 1.9,
    "Deva": 2.1, "Beng": 2.1, "Taml": 3.1, "Telu": 2.9, "Mlym": 3.1, "Ethi": 8.4, "Kore": 2.5,
    "Hans": 1.3, "Jpan": 1.2, "Thai": 0.7, "Khmr": 1.0,
    "Gujr": 2.9, "Guru": 2.9, "Orya": 2.9, "Knda": 2.9, "Sinh": 2.9, "Laoo": 1.0, "Mymr": 1.0, "Hant": 1.3,
}
DEFAULT_TOKENS_PER_WORD = 18.4  # a script not in the table: the costliest measured
HEADROOM = 2.0  # budget over the asked-for length: "at least N words" answers run long
OVERSHOOT = 1.3  # dry-run estimate: the typical answer is a little over the asked-for length
JSON_TOKENS = 48  # braces, keys and quotes of one answer
MIN_BUDGET = 256
PROMPT_MARGIN = 32  # tokens kept free in a known context window (chat template, rounding)

def table_for(local: bool, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """Tokens per word per script for an endpoint: SmolLM2's for the embedded server, o200k's
    elsewhere, with ``generate.tokens_per_word`` on top."""
    return {**(TOKENS_PER_WORD if local else TOKENS_PER_WORD_O200K), **(overrides or {})}


def tokens_per_word(language: Language, overrides: dict[str, float] | None = None) -> float:
    """The most expensive of the language's scripts (a language in two scripts may use either)."""
    table = {**TOKENS_PER_WORD, **(overrides or {})}
    return max(table.get(script, DEFAULT_TOKENS_PER_WORD) for script in language.scripts)


def target_words(family: str, slot: dict[str, Any]) -> int:
    """Words one example answer is asked to contain: the family's answer size over the slot's placeholders."""
    size = FAMILIES[family].answer
    if size is None:
        raise ValueError(f"family {family!r} declares no answer size (Family.answer in workbench/families.py)")
    return size.words(slot)


def _round_up(tokens: float, step: int = 64) -> int:
    return int(math.ceil(tokens / step) * step)


def cap(budget: int, *, max_tokens_cap: int, context_tokens: int | None, prompt_tokens: int) -> int:
    """``budget`` within the endpoint's output limit and, if known, what its context leaves free."""
    limit = max_tokens_cap
    if context_tokens is not None:
        limit = min(limit, context_tokens - prompt_tokens - PROMPT_MARGIN)
    return max(16, min(budget, limit))


def _rate(language: Language, target: Language | None, overrides: dict[str, float] | None) -> float:
    rate = tokens_per_word(language, overrides)
    return rate if target is None else max(rate, tokens_per_word(target, overrides))


def completion_budget(family: str, slot: dict[str, Any], language: Language, target: Language | None = None,
                      overrides: dict[str, float] | None = None) -> int:
    """``max_tokens`` for one example request before capping (bitext: the costlier of both languages)."""
    rate = _rate(language, target, overrides)
    return max(MIN_BUDGET, _round_up(target_words(family, slot) * rate * HEADROOM + JSON_TOKENS))


def expected_completion_tokens(family: str, slot: dict[str, Any], language: Language,
                               target: Language | None = None, overrides: dict[str, float] | None = None) -> int:
    """The dry run's estimate of one example answer's completion tokens."""
    rate = _rate(language, target, overrides)
    return int(math.ceil(target_words(family, slot) * rate * OVERSHOOT + JSON_TOKENS))


def larger_budget(budget: int, limit: int) -> int | None:
    """The budget for re-sending a truncated answer (twice the first, within ``limit``); None if none is larger."""
    bigger = min(2 * budget, limit)
    return bigger if bigger > budget else None


def prompt_tokens_upper(messages: list[dict[str, str]]) -> int:
    """A generous prompt-token count for capping against a context window (~3 characters per token)."""
    return math.ceil(sum(len(m["content"]) for m in messages) / 3)


TRUNCATED = "truncated"  # the error prefix of a slot whose answer was cut at max_tokens


def truncation_error(max_tokens: int, why: str) -> str:
    """The ``error`` of a truncated answer (``finish_reason == "length"``); the audit counts the prefix."""
    return f"{TRUNCATED}: the answer was cut at max_tokens={max_tokens} (finish_reason 'length') {why}"
