"""Exact and near-duplicate detection within one language (first occurrence wins).

Exact: SHA-1 of the normalised text (:func:`workbench.filter.rules.normalise`). Near: MinHash
signatures over character n-gram shingles of the normalised text (works for spaced and unspaced
scripts alike), banded like :class:`datasketch.MinHashLSH`; an LSH candidate counts as a duplicate
only when the estimated Jaccard similarity reaches the threshold.

The signatures of many texts are computed with numpy in one pass (a polynomial rolling hash of the
n code points of each shingle, then ``num_perm`` multiply-shift hash functions, minimum per function
and text): the same estimator as ``datasketch.MinHash`` with a different (deterministic, seeded)
shingle hash. The index is datasketch's banding with the band and row counts datasketch picks for
the threshold (:func:`lsh_bands`): a text is a candidate of an earlier one when all the values of
one band agree, and a duplicate when the share of equal values (``LeanMinHash.jaccard``) reaches
the threshold; the same candidates and verdicts as ``MinHashLSH`` with ``LeanMinHash`` at a fraction
of the cost (the bands grouped with ``numpy.unique``; only texts that share a band with another
text are walked one by one, no object per text).

Example::

    find_duplicates(["a b c", "a b c", "x"], threshold=0.8) -> [None, "exact", None]
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from datasketch import MinHashLSH

from workbench.filter.rules import normalise

_MAX = np.uint64((1 << 32) - 1)
_SHIFT = np.uint64(32)
_BASE = np.uint64(1_000_003)
# shingles per numpy pass (after sampling): one uint64 buffer of this many stays in the CPU cache
_BLOCK_SHINGLES = 1 << 15


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiply-shift hash functions h(x) = ((a*x + b) mod 2**64) >> 32, with odd ``a``."""
    gen = np.random.default_rng(seed)
    a = gen.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = gen.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
    return a[:, None], b[:, None]


@lru_cache(maxsize=16)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that ``datasketch.MinHashLSH`` picks for ``threshold`` and ``num_perm``
    (its false-positive/false-negative optimum, and its checks: a threshold that leaves fewer than
    two bands is its ValueError). Computed once per process: the optimum integrates numerically."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def signature(text: str, num_perm: int = 64, shingle_chars: int = 5, seed: int = 1, sample: int = 1) -> np.ndarray:
    """MinHash values (uint64, length ``num_perm``) of the character shingles of ``text``.

    ``sample`` > 1 keeps only shingles whose hash is divisible by it: the same shingles are kept in
    every text, so the Jaccard similarity of the kept sets estimates that of the full sets, at
    1/sample of the cost (used for whole examples, which are long). When no shingle is kept, the
    first one is. :func:`signatures` gives the same values for many texts at once.
    """
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = min(shingle_chars, len(points))
    width = len(points) - n + 1
    hashes = np.zeros(width, dtype=np.uint64)
    for k in range(n):  # polynomial hash of each n-gram, modulo 2**32 (repeats do not change a minimum)
        hashes = (hashes * _BASE + points[k : k + width]) & _MAX
    if sample > 1:
        kept = hashes[hashes % np.uint64(sample) == 0]
        hashes = kept if len(kept) else hashes[:1]
    a, b = _permutations(num_perm, seed)
    values = hashes[None, :] * a  # in place from here: one num_perm x shingles array, not three
    values += b
    return values.min(axis=1) >> _SHIFT  # x >> 32 is monotonic: the minimum first, then the shift


def signatures(texts: list[str], num_perm: int = 64, shingle_chars: int = 5, seed: int = 1,
               sample: int = 1) -> np.ndarray:
    """:func:`signature` of each text, as rows of one (len(texts), num_perm) uint64 array.

    The texts are hashed together, a block of about ``_BLOCK_SHINGLES`` shingles at a time: the
    rolling hash runs over their concatenation, windows that cross a boundary between two texts are
    dropped, and each text's minimum is one ``reduceat`` segment.
    """
    out = np.empty((len(texts), num_perm), dtype=np.uint64)
    start = 0
    budget = _BLOCK_SHINGLES * sample
    while start < len(texts):
        stop, chars = start + 1, len(texts[start])
        while stop < len(texts) and chars + len(texts[stop]) <= budget:
            chars += len(texts[stop])
            stop += 1
        out[start:stop] = _block_signatures(texts[start:stop], num_perm, shingle_chars, seed, sample)
        start = stop
    return out


def _block_signatures(texts: list[str], num_perm: int, shingle_chars: int, seed: int, sample: int) -> np.ndarray:
    out = np.empty((len(texts), num_perm), dtype=np.uint64)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    short = np.flatnonzero(lengths < shingle_chars)
    for i in short:  # fewer code points than one shingle: one shingle of all of them (rare)
        out[i] = signature(texts[i], num_perm, shingle_chars, seed, sample)
    if len(short) == len(texts):
        return out
    # uint32 arithmetic wraps modulo 2**32: the same hash as signature()'s uint64 one masked to 32 bits
    points = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
    width = len(points) - shingle_chars + 1
    hashes = np.zeros(width, dtype=np.uint32)
    for k in range(shingle_chars):
        hashes *= np.uint32(_BASE)
        hashes += points[k : k + width]
    text_of = np.repeat(np.arange(len(texts), dtype=np.int32), lengths)  # the text of each code point
    owner = text_of[:width]  # the text of each window's first code point
    keep = owner == text_of[shingle_chars - 1 :]  # windows inside one text
    if sample > 1:
        keep &= hashes % np.uint32(sample) == 0
        # a text none of whose shingles is kept keeps its first one, as signature() does
        counts = np.bincount(owner[keep], minlength=len(texts))
        firsts = np.cumsum(lengths) - lengths
        keep[firsts[(counts == 0) & (lengths >= shingle_chars)]] = True
    kept = hashes[keep].astype(np.uint64)
    counts = np.bincount(owner[keep], minlength=len(texts))
    long = np.flatnonzero(lengths >= shingle_chars)
    starts = np.cumsum(counts[long]) - counts[long]
    a, b = _permutations(num_perm, seed)
    values = np.empty_like(kept)
    minima = np.empty((num_perm, len(long)), dtype=np.uint64)
    for function in range(num_perm):  # one function at a time: a buffer of one value per shingle stays in cache
        np.multiply(kept, a[function, 0], out=values)
        values += b[function, 0]
        minima[function] = np.minimum.reduceat(values, starts)
    out[long] = (minima >> _SHIFT).T
    return out


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
    return find_normalised_duplicates([None if text is None else normalise(text) for text in texts], exact=exact,
                                      near=near, threshold=threshold, num_perm=num_perm,
                                      shingle_chars=shingle_chars, seed=seed, sample=sample)


def find_normalised_duplicates(
    norms: list[str | None],
    *,
    exact: bool = True,
    near: bool = True,
    threshold: float = 0.8,
    num_perm: int = 64,
    shingle_chars: int = 5,
    seed: int = 1,
    sample: int = 1,
) -> list[str | None]:
    """:func:`find_duplicates` of texts already normalised (:func:`normalise`); None or empty: skipped."""
    out: list[str | None] = [None] * len(norms)
    seen: set[bytes] = set()
    fresh: list[int] = []  # not an exact duplicate: compared by MinHash
    for index, norm in enumerate(norms):
        if not norm:
            continue
        digest = hashlib.sha1(norm.encode()).digest()
        if exact and digest in seen:
            out[index] = "exact"
            continue
        seen.add(digest)
        fresh.append(index)
    if not near or not fresh:
        return out
    bands, rows = lsh_bands(threshold, num_perm)
    values = signatures([norms[i] for i in fresh], num_perm, shingle_chars, seed, sample)
    # per band, the texts whose values in the band are all equal share a group (MinHashLSH's bucket);
    # a text alone in its group in every band is nobody's candidate: only the others are walked
    groups = np.empty((len(fresh), bands), dtype=np.int64)
    shared = np.zeros(len(fresh), dtype=bool)
    for band in range(bands):
        _, inverse, counts = np.unique(values[:, band * rows : (band + 1) * rows], axis=0, return_inverse=True,
                                       return_counts=True)
        inverse = inverse.ravel()
        groups[:, band] = inverse
        shared |= counts[inverse] > 1
    buckets: list[dict[int, list[int]]] = [{} for _ in range(bands)]
    for position in np.flatnonzero(shared).tolist():
        keys = groups[position].tolist()
        candidates: set[int] = set()
        for bucket, key in zip(buckets, keys):
            hit = bucket.get(key)
            if hit is not None:
                candidates.update(hit)
        mine = values[position]
        # LeanMinHash.jaccard: the share of equal values, as a float
        if any(np.count_nonzero(mine == values[other]) / num_perm >= threshold for other in candidates):
            out[fresh[position]] = "near"
            continue  # a near-duplicate does not become a new reference itself
        for bucket, key in zip(buckets, keys):
            bucket.setdefault(key, []).append(position)
    return out
