"""The filter's speedups are exact: each fast path gives what the plain one gives, on real text.

Dedup: the batched MinHash signatures equal the one-text-at-a-time ones, and the own banded index
gives the verdicts of ``datasketch.MinHashLSH`` + ``LeanMinHash`` (the reference path below, the
implementation before issue 23's throughput work), on real sentences and paragraphs with edited
copies spread around the threshold.

The whole filter: its accepted/rejected tables on 3,450 real-text rows of 23 languages (with wrong
languages, copies, short and letterless fields mixed in) equal those recorded in
``tests/data/filter_verdicts.json`` by the code before the speedups (main at 821212d): the counts,
the reasons by count, and a digest of every row's reasons, LID language, support and votes. A change
meant to move verdicts re-records it (:func:`record`) and says so; a speedup never does.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHashLSH

from workbench.config import RunConfig
from workbench.families import FAMILIES
from workbench.filter.dedup import find_duplicates, lsh_bands, signature, signatures
from workbench.filter.rules import normalise, normalise_lines
from workbench.filter.stage import run_filter
from workbench.languages import load_registry
from workbench.run import Run
from workbench.tables import FILTERED, GENERATED
from workbench.testing.samples import (
    generated_table,
    synthetic_rows,
    tatoeba_sentences,
    xquad_paragraphs,
)


def _reference_duplicates(texts, *, exact=True, near=True, threshold=0.8, num_perm=64, shingle_chars=5, seed=1,
                          sample=1):
    """find_duplicates as it was: datasketch's LSH over LeanMinHash objects, one text at a time."""
    out = [None] * len(texts)
    seen = set()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm) if near else None
    kept = {}
    for index, text in enumerate(texts):
        if text is None:
            continue
        norm = normalise(text)
        if not norm:
            continue
        digest = hashlib.sha1(norm.encode()).digest()
        if exact and digest in seen:
            out[index] = "exact"
            continue
        seen.add(digest)
        if lsh is None:
            continue
        minhash = LeanMinHash(seed=seed, hashvalues=signature(norm, num_perm, shingle_chars, seed, sample),
                              scheme="legacy")
        if any(minhash.jaccard(kept[other]) >= threshold for other in lsh.query(minhash)):
            out[index] = "near"
            continue
        kept[index] = minhash
        lsh.insert(index, minhash)
    return out


def _edited(text: str, rng: random.Random) -> str:
    """A copy with a share of its words dropped, swapped or changed: anywhere from near-identical to distinct."""
    words = text.split()
    share = rng.choice((0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5))
    for _ in range(max(1, int(share * len(words)))):
        i = rng.randrange(len(words))
        action = rng.random()
        if action < 0.4 and len(words) > 1:
            del words[i]
        elif action < 0.7:
            words[i] = words[i][::-1]
        else:
            words.insert(i, rng.choice(words))
    return " ".join(words)


@pytest.fixture(scope="module")
def texts(shared_data, registry):  # noqa: F811
    """Real sentences and paragraphs of 6 languages (5 scripts), with edited and verbatim copies, a
    few texts shorter than a shingle and a few with no letters: 3,000 texts in a fixed order."""
    rng = random.Random(23)
    pool = []
    for code in ("de", "ru", "ar", "th", "sw", "ja"):
        pool += rng.sample(tatoeba_sentences(shared_data, registry.get(code)), 250)
        pool += [p for p in xquad_paragraphs(shared_data, code)[:120]]
    pool += ["ok", "a b", "Ja.", "!!!", "", "  ", "4678,2042", "行。"]
    out = list(pool)
    while len(out) < 3000:
        source = rng.choice(out)
        out.append(_edited(source, rng) if source.split() and rng.random() < 0.85 else source.upper())
    rng.shuffle(out)
    return [None if i % 97 == 0 else t for i, t in enumerate(out)]


@pytest.mark.parametrize("sample, num_perm, shingle_chars", [(1, 64, 5), (4, 64, 5), (4, 128, 3), (64, 32, 5)])
def test_batched_signatures_equal_one_at_a_time(texts, sample, num_perm, shingle_chars):
    norms = [n for n in (normalise(t) for t in texts if t is not None) if n]
    batched = signatures(norms, num_perm, shingle_chars, 7, sample)
    assert batched.shape == (len(norms), num_perm)
    assert (batched == np.array([signature(n, num_perm, shingle_chars, 7, sample) for n in norms])).all()


@pytest.mark.parametrize("threshold, num_perm, sample, exact", [
    (0.8, 64, 1, True), (0.8, 64, 4, True), (0.8, 64, 1, False), (0.5, 64, 1, True), (0.9, 128, 4, True),
    (0.7, 32, 1, True),
])
def test_banded_index_gives_datasketchs_verdicts(texts, threshold, num_perm, sample, exact):
    new = find_duplicates(texts, exact=exact, threshold=threshold, num_perm=num_perm, sample=sample)
    old = _reference_duplicates(texts, exact=exact, threshold=threshold, num_perm=num_perm, sample=sample)
    assert new == old
    assert new.count("near") > 50 and new.count(None) > 1000  # the comparison has both kinds in numbers
    if exact:
        assert new.count("exact") > 50


def test_ascii_texts_normalise_as_through_nfkc_and_the_regex(texts):
    """normalise()'s ASCII path equals NFKC + casefold + the punctuation-and-space runs, on every ASCII
    character (random strings, U+001C-U+001F included) and on the real texts."""
    import unicodedata

    from workbench.filter.rules import _NON_WORD

    def reference(text):
        return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()

    rng = random.Random(9)
    ascii_chars = "".join(map(chr, range(128)))
    samples = ["".join(rng.choice(ascii_chars) for _ in range(rng.randrange(30))) for _ in range(20000)]
    samples += [t for t in texts if t is not None]
    assert sum(t.isascii() for t in samples) > 20000
    assert [normalise(t) for t in samples] == [reference(t) for t in samples]


def test_ascii_letters_are_the_regexs_letters(texts):
    """letters_of()'s ASCII path (bytes.translate) keeps what ``\\P{L}+`` removal keeps, on every ASCII
    character, random ASCII strings and the real texts; letters_and_head() as from the regex."""
    from workbench.filter.script import _NON_LETTERS, letters_and_head, letters_of

    rng = random.Random(11)
    ascii_chars = "".join(map(chr, range(128)))
    samples = list(ascii_chars) + ["".join(rng.choice(ascii_chars) for _ in range(rng.randrange(60)))
                                   for _ in range(20000)]
    samples += [t for t in texts if t is not None]
    assert sum(t.isascii() for t in samples) > 20000 and sum(not t.isascii() for t in samples) > 2000
    assert [letters_of(t) for t in samples] == [_NON_LETTERS.sub("", t) for t in samples]
    for text in samples[-3000:]:
        for head in (0, 5, 400):
            assert letters_and_head(text, head) == (_NON_LETTERS.sub("", text), len(_NON_LETTERS.sub("", text[:head])))


def _literal_beginning(alternative: str) -> str:
    """What an alternative of a pattern matches literally before its first group, class, anchor or
    quantified character (after a leading ``\\b``)."""
    text, out, i = alternative.removeprefix(r"\b"), [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 2] in ("{", "[", "<"):
            char, step = text[i + 1], 2  # an escaped literal
        elif text[i].isalnum() or text[i] in " ',<":
            char, step = text[i], 1
        else:
            break
        if text[i + step : i + step + 1] in ("?", "*", "{"):
            break  # quantified: it may be absent
        out.append(char)
        i += step
    return "".join(out)


def test_a_field_without_the_needed_characters_is_not_boilerplate(texts):
    """rule_boilerplate skips the scan of a field with none of BOILERPLATE_NEEDS: every alternative of
    the placeholder and refusal patterns begins with a literal holding one of them, and every code
    point that matches that literal's character under IGNORECASE is among them."""
    import sys

    import regex

    from workbench.filter.rules import (
        _BOILERPLATE,
        BOILERPLATE_NEEDS,
        PLACEHOLDERS,
        REFUSALS,
        _may_be_boilerplate,
    )

    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)
    needs = set(BOILERPLATE_NEEDS)

    def sound(char: str) -> bool:  # whatever matches char case-insensitively is a needed character
        return set(regex.compile(regex.escape(char), regex.IGNORECASE).findall(every)) <= needs

    assert [alt for alt in PLACEHOLDERS + REFUSALS
            if not any(sound(char) for char in set(_literal_beginning(alt)) & needs)] == []
    assert _literal_beginning(r"\bas an ai(?: language)? model\b") == "as an ai"
    assert _literal_beginning(r"\{\{?\s*[A-Za-z_]") == "{"
    written = ["As an AI language model, I", "AS AN A\u0130 MODEL", "{query}", "[insert text here]", "<your name>",
               "Lorem ipsum dolor", "I'm sorry, but no", "\u0130 CANNOT HELP", "Here is the JSON:", "i apologize"]
    assert all(_BOILERPLATE.search(t) and _may_be_boilerplate(t) for t in written)
    real = [t for t in texts if t is not None] + [f"{t} {w}" for t, w in zip(texts[::10], written * 30) if t]
    assert sum(not _may_be_boilerplate(t) for t in real) > 1000  # the skip is taken on real text
    assert [t for t in real if _BOILERPLATE.search(t) and not _may_be_boilerplate(t)] == []


def test_an_examples_normal_form_is_made_of_its_fields(texts):
    """normalise_lines(parts) == normalise("\\n".join(parts)), also for parts that begin with a combining
    mark, are punctuation or space only, empty, or hold a separator U+001C-U+001F."""
    rng = random.Random(5)
    odd = ["", "  ", "!!!", "\u0301abc", "e\u0301", "ﬁ ＡＢＣ", "a\x1cb", "\x1f", "x\x1d", "Σ ΣΑΣ", "ß-ẞ", "\u200b"]
    pool = [t for t in texts if t is not None] + odd
    norms: dict[str, str] = {}
    for _ in range(3000):
        parts = [rng.choice(pool if rng.random() < 0.8 else odd) for _ in range(rng.randint(1, 4))]
        assert normalise_lines(parts, norms) == normalise("\n".join(parts)), parts
        assert normalise_lines(parts) == normalise("\n".join(parts)), parts


def test_lsh_bands_are_datasketchs_and_keep_its_checks():
    assert lsh_bands(0.8, 64) == (MinHashLSH(threshold=0.8, num_perm=64).b, MinHashLSH(threshold=0.8, num_perm=64).r)
    with pytest.raises(ValueError):
        lsh_bands(1.5, 64)


# --- the whole filter: verdicts recorded before the speedups -----------------------------------------------

VERDICTS = Path(__file__).parent / "data" / "filter_verdicts.json"
VERDICT_LANGUAGES = ("sw", "de", "ru", "be", "uk", "ar", "hi", "mr", "th", "ja", "zh", "am", "ms", "id", "pt", "gl",
                     "es", "bs", "hr", "el", "ko", "ta", "ka")


def verdict_rows(data: Path, registry) -> dict[str, list[dict]]:  # noqa: F811
    """Real-text rows in 23 languages (12 scripts), 150 each, of every family, and in 1 of 4 something a
    generator gets wrong: a field in English or a neighbour language, an edited or verbatim copy of an
    earlier row's field, a field of one or two words, a letterless field."""
    rng = random.Random(2323)
    sentences = {code: tatoeba_sentences(data, registry.get(code)) for code in registry.by_code}
    english = sentences["en"]
    out = {}
    for code in VERDICT_LANGUAGES:
        rows = synthetic_rows(code, sentences[code], english, 150, rng, xquad_paragraphs(data, code) or None)
        others = [other for other in sorted(registry.confusables(code)) + ["en"] if sentences[other]]
        for index, row in enumerate(rows):
            fields = [f for f in FAMILIES[row["family"]].fields if row.get(f)]
            name = rng.choice(fields)
            roll = rng.random()
            if roll < 0.08:
                row[name] = rng.choice(sentences[rng.choice(others)])
            elif roll < 0.16 and index > 5:
                earlier = rows[rng.randrange(index)]
                source = earlier.get(name) or row[name]
                row[name] = _edited(source, rng) if roll < 0.12 and source.split() else source
            elif roll < 0.20:
                row[name] = " ".join(row[name].split()[:2])
            elif roll < 0.22:
                row[name] = rng.choice(("N/A", "{", "3559", "{'Worst'}", "4678,2042"))
        out[code] = rows
    return out


PROB_SCALE = 10_000  # the filter rounds probabilities to 4 decimals
# fastText's and the other members' probabilities move in the 4th decimal from one CPU to another (SIMD
# paths), so a recorded probability is compared within this many 1e-4 steps, and everything discrete
# (labels, reasons, the verdict) exactly.
PROB_STEPS = 3


def _digests(run: Run) -> dict[str, dict]:
    """Per language: accepted and rejected counts, reasons by count, a digest of every row's discrete
    verdict (reasons, language, accepted-as, each vote's field, member and label) and every row's
    probabilities (its votes' and its support) in 1e-4 steps."""
    out = {}
    for code in run.table_languages("accepted"):
        entry, rows = {}, []
        for stage in ("accepted", "rejected"):
            table = run.read_table(stage, code, FILTERED)
            entry[stage] = table.height
            rows += table.select("slot_id", "reasons", "lid_language", "lid_support", "lid_votes",
                                 "lid_accepted_as").to_dicts()
        rows.sort(key=lambda r: r["slot_id"])
        reasons = Counter(reason for row in rows for reason in row["reasons"])
        entry["reasons"] = dict(sorted(reasons.items()))
        discrete = [[r["slot_id"], r["reasons"], r["lid_language"], r["lid_accepted_as"],
                     [[v["field"], v["member"], v["label"]] for v in r["lid_votes"] or []]] for r in rows]
        entry["digest"] = hashlib.sha256(json.dumps(discrete, sort_keys=True).encode()).hexdigest()
        entry["probs"] = {r["slot_id"]: [_steps(v["prob"]) for v in r["lid_votes"] or []] + [_steps(r["lid_support"])]
                          for r in rows}
        out[code] = entry
    return out


def _steps(prob: float | None) -> int:
    return -1 if prob is None else round(prob * PROB_SCALE)


def filter_verdicts(data: Path, registry, root: Path) -> dict[str, dict]:  # noqa: F811
    run = Run.create(root)
    for code, rows in verdict_rows(data, registry).items():
        run.write_table("generated", code, generated_table(rows), GENERATED)
    run_filter(run, RunConfig.model_validate({"filter": {"workers": 1}}), registry)
    return _digests(run)


def record(root: str = "/tmp/filter-verdicts", data: Path = Path(__file__).resolve().parents[2] / "shared" / "data") -> None:
    """Write tests/data/filter_verdicts.json from the code on the path (only ever from the code the verdicts
    must stay equal to: a change that moves a verdict on purpose is not a speedup, and re-records)."""
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    VERDICTS.parent.mkdir(exist_ok=True)
    verdicts = filter_verdicts(data, load_registry(), Path(root))
    # one language per line: the file stays diffable by language without a line per probability
    VERDICTS.write_text("{\n" + ",\n".join(f"{json.dumps(code)}: {json.dumps(entry, sort_keys=True)}"
                                            for code, entry in sorted(verdicts.items())) + "\n}\n")


def test_filter_verdicts_equal_those_recorded_before_the_speedups(shared_data, registry, tmp_path):  # noqa: F811
    recorded = json.loads(VERDICTS.read_text())
    now = filter_verdicts(shared_data, registry, tmp_path / "run")
    assert sum(e["rejected"] for e in now.values()) > 500 and sum(e["accepted"] for e in now.values()) > 2000
    for code in VERDICT_LANGUAGES:
        assert {k: now[code][k] for k in ("accepted", "rejected", "reasons")} == \
               {k: recorded[code][k] for k in ("accepted", "rejected", "reasons")}, code
        assert now[code]["digest"] == recorded[code]["digest"], f"{code}: same counts, some reasons or votes differ"
        assert now[code]["probs"].keys() == recorded[code]["probs"].keys(), code
        for slot, steps in recorded[code]["probs"].items():
            assert len(now[code]["probs"][slot]) == len(steps), slot
            moved = max((abs(a - b) for a, b in zip(now[code]["probs"][slot], steps)), default=0)
            assert moved <= PROB_STEPS, f"{slot}: a probability moved by {moved / PROB_SCALE:.4f}"
