"""The filter's speedups are exact: each fast path gives what the plain one gives, on real text.

Dedup: the batched MinHash signatures equal the one-text-at-a-time ones, and the own banded index
gives the verdicts of ``datasketch.MinHashLSH`` + ``LeanMinHash`` (the reference path below, the
implementation before issue 23's throughput work), on real sentences and paragraphs with edited
copies spread around the threshold.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHashLSH

from filter_fixtures import registry  # noqa: F401  (pytest fixture)
from workbench.filter.dedup import find_duplicates, lsh_bands, signature, signatures
from workbench.filter.rules import normalise
from workbench.testing.samples import tatoeba_sentences, xquad_paragraphs


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


def test_lsh_bands_are_datasketchs_and_keep_its_checks():
    assert lsh_bands(0.8, 64) == (MinHashLSH(threshold=0.8, num_perm=64).b, MinHashLSH(threshold=0.8, num_perm=64).r)
    with pytest.raises(ValueError):
        lsh_bands(1.5, 64)
