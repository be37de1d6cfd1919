"""Exact and near-duplicate detection within one language (first occurrence wins).

Exact: SHA-1 of the normalised text (:func:`workbench.filter.rules.normalise`). Near: MinHash
signatures over character n-gram shingles of the normalised text (works for spaced and unspaced
scripts alike), banded with :class:`datasketch.MinHashLSH`; an LSH candidate counts as a
duplicate only when the estimated Jaccard similarity reaches the threshold.

The signatures are computed with numpy in one pass per text (a polynomial rolling hash of the
n code points of each shingle, then ``num_perm`` multiply-shift hash functions, minimum per
function) and handed to datasketch as :class:`datasketch.LeanMinHash`: the same estimator as
``datasketch.MinHash`` with a different (deterministic, seeded) shingle hash, ~50x faster than
hashing shingle by shingle in Python.

Example::

    find_duplicates(["a b c", "a b c", "x"], threshold=0.8) -> [None, "exact", None]
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from workbench.filter.rules import normalise

_MAX = np.uint64((1 << 32) - 1)
_SHIFT = np.uint64(32)


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiply-shift hash functions h(x) = ((a*x + b) mod 2**64) >> 32, with odd ``a``."""
    gen = np.random.default_rng(seed)
    a = gen.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = gen.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
    return a[:, None], b[:, None]


def signature(text: str, num_perm: int = 64, shingle_chars: int = 5, seed: int = 1, sample: int = 1) -> np.ndarray:
    """MinHash values (uint64, length ``num_perm``) of the character shingles of ``text``.

    ``sample`` > 1 keeps only shingles whose hash is divisible by it: the same shingles are kept in
    every text, so the Jaccard similarity of the kept sets estimates that of the full sets, at
    1/sample of the cost (used for whole examples, which are long).
    """
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = min(shingle_chars, len(points))
    width = len(points) - n + 1
    hashes = np.zeros(width, dtype=np.uint64)
    for k in range(n):  # polynomial hash of each n-gram, modulo 2**32 (repeats do not change a minimum)
        hashes = (hashes * np.uint64(1_000_003) + points[k : k + width]) & _MAX
    if sample > 1:
        kept = hashes[hashes % np.uint64(sample) == 0]
        hashes = kept if len(kept) else hashes[:1]
    a, b = _permutations(num_perm, seed)
    values = hashes[None, :] * a  # in place from here: one num_perm x shingles array, not three
    values += b
    return values.min(axis=1) >> _SHIFT  # x >> 32 is monotonic: the minimum first, then the shift


def find_duplicates(
    texts: list[str | None],
    *,
    exact: bool = True,
    near: bool = True,
    threshold: float = 0.8,
    num_perm: int = 64,
    shingle_chars: int = 5,
    seed: int = 1,
    sample: int = 1,
) -> list[str | None]:
    """Per text: ``"exact"``, ``"near"`` (a duplicate of an earlier text) or None. None texts are skipped."""
    out: list[str | None] = [None] * len(texts)
    seen: set[bytes] = set()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm) if near else None
    signatures: dict[int, LeanMinHash] = {}
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
        minhash = LeanMinHash(seed=seed, hashvalues=signature(norm, num_perm, shingle_chars, seed, sample), scheme="legacy")
        if any(minhash.jaccard(signatures[other]) >= threshold for other in lsh.query(minhash)):
            out[index] = "near"
            continue  # a near-duplicate does not become a new reference itself
        signatures[index] = minhash
        lsh.insert(index, minhash)
    return out
