"""Synthetic-shaped ``generated/`` rows assembled from real human-written text (tests, benchmarks).

The filter is tested and benchmarked without an LLM: each task family's fields are filled with
real sentences from the LASER Tatoeba test sets (``../shared/data/tatoeba``, CC BY 2.0 FR) and
XQuAD paragraphs (``../shared/data/xquad``), so language ID sees real language, not lorem ipsum.
This is a test-data builder, not part of the pipeline.

Example::

    sentences = tatoeba_sentences(data_dir, registry.get("sw"))   # list of Swahili sentences
    rows = synthetic_rows("sw", sentences, english, n=100, rng=random.Random(0))
    table = generated_table(rows)
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import polars as pl

from workbench.families import EXAMPLE_FIELDS, FAMILIES, FAMILY_NAMES, PLACEHOLDER_COLUMNS
from workbench.languages import Language
from workbench.tables import GENERATED


def tatoeba_file(data_dir: Path, language: Language) -> Path | None:
    """The Tatoeba file of ``language`` (registry code, else ISO 639-3), or None."""
    folder = Path(data_dir) / "tatoeba"
    if language.code == "en":
        return folder / "tatoeba.deu-eng.eng"
    for code in (language.tatoeba, language.iso639_3):
        if code and (folder / f"tatoeba.{code}-eng.{code}").is_file():
            return folder / f"tatoeba.{code}-eng.{code}"
    return None


def tatoeba_sentences(data_dir: Path, language: Language) -> list[str]:
    path = tatoeba_file(data_dir, language)
    if path is None:
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return list(dict.fromkeys(line.strip() for line in lines if line.strip()))


def xquad_paragraphs(data_dir: Path, code: str) -> list[str]:
    path = Path(data_dir) / "xquad" / code / "corpus.jsonl"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def _join(sentences: list[str], rng: random.Random, k: int) -> str:
    return " ".join(rng.sample(sentences, min(k, len(sentences))))


def _texts(family: str, own: list[str], target: list[str], rng: random.Random, doc) -> list[str]:
    """The family's field texts, in the order of ``Family.fields``, filled by ``Family.shapes``: real
    sentences and paragraphs, each field in its language (cross-lingual families: the target
    language outside the query). Labels and sentences are drawn together, distinct, before the rest."""
    spec = FAMILIES[family]
    if len(spec.shapes) != len(spec.fields):
        raise ValueError(f"family {family!r} declares no shape per field (Family.shapes in workbench/families.py)")
    shape_of = dict(zip(spec.fields, spec.shapes))
    pools = {f: (target if spec.cross_lingual and f != spec.query else own) for f in spec.fields}
    texts: dict[str, str] = {}
    for kind in ("label", "sentence"):  # drawn together: a set of distinct texts
        grouped = [f for f in spec.fields if shape_of[f] == kind]
        if grouped:
            texts.update(zip(grouped, rng.sample(pools[grouped[0]], len(grouped))))
    labels = [f for f in spec.fields if shape_of[f] == "label"]
    if labels:  # a few words; unspaced scripts: a few characters
        first = texts[labels[0]]
        cut = (lambda s: s[:6]) if len(first.split()) == 1 and len(first) > 12 else (lambda s: " ".join(s.split()[:3]))
        texts.update({f: cut(texts[f]) for f in labels})
    for f in spec.fields:
        if shape_of[f] == "short":
            texts[f] = rng.choice(pools[f])
        elif shape_of[f] == "document":
            texts[f] = doc()
        elif shape_of[f] == "long":
            texts[f] = _join(pools[f], rng, 20)
        elif f not in texts:
            raise ValueError(f"family {family!r}: unknown shape {shape_of[f]!r} of field {f!r}")
    return [texts[f] for f in spec.fields]


def synthetic_row(code: str, family: str, index: int, own: list[str], target: list[str],
                  rng: random.Random, paragraphs: list[str] | None = None) -> dict:
    """One generated row (status ok) of ``family`` whose fields are real text in language ``code``."""
    row: dict[str, object] = dict.fromkeys((*PLACEHOLDER_COLUMNS, *EXAMPLE_FIELDS))
    doc = (lambda: rng.choice(paragraphs)) if paragraphs else (lambda: _join(own, rng, 8))
    roles = FAMILIES[family]
    row.update(zip(roles.fields, _texts(family, own, target, rng, doc)))
    if roles.cross_lingual:
        row["target_language"] = "en" if code != "en" else "de"
    row.update(
        slot_id=f"{code}-{family}-{index:05d}",
        language=code,
        family=family,
        task=f"real-text stand-in task {index % 7} for {family}",
        status="ok",
        error=None,
        raw_response=None,
        model="real-text-fixture",
        prompt_tokens=120,
        completion_tokens=240,
        cost_usd=0.0001,
        attempts=1,
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).isoformat(),
    )
    return row


def synthetic_rows(code: str, own: list[str], target: list[str], n: int, rng: random.Random,
                   paragraphs: list[str] | None = None, families: tuple[str, ...] = FAMILY_NAMES) -> list[dict]:
    return [synthetic_row(code, families[i % len(families)], i, own, target, rng, paragraphs) for i in range(n)]


def generated_table(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=GENERATED)
