"""Personalized passkey retrieval in every generation language: a per-language long-context probe.

After the E5-mistral paper (section 5.2; Mohtashami & Jaggi 2023; LongEmbed): a document is filler
text with one sentence naming a person and their passkey; the query asks for that person's passkey;
the right document must rank first among ``candidates`` documents. Here the filler is **in the
language** and the length is set in the **evaluated encoder's own tokens**, so a report can show how
much text (characters, words) a token window holds per language and where retrieval breaks down.

For each language, length (tokens) and needle depth (percent of the document) — one *cell* — the
probe draws one filler from the language's text and builds ``candidates`` documents from it, each
with its own person (a distinct name, a distinct 5-digit passkey) in the needle at that depth: as in
the paper, the candidates differ only in their needle. ``queries`` of them are asked for. A query scores 100 when its document has the highest cosine similarity of all
candidates (a tie is a miss), else 0. Randomness comes from one ``random.Random`` per cell, seeded
from ``[eval.passkey] seed`` and the cell, so a cell's documents never depend on the other cells.

Filler: the run's accepted examples (every text field) by default; ``--data-dir DIR``: per language
``<code>.txt`` (one text a line) or the LASER Tatoeba layout (``tatoeba.<xxx>-eng.<xxx>``; English
from the ``.eng`` sides), as shipped in ``examples/data/tatoeba``.

Needles and names: ``passkey_needles.toml`` (templates with their provenance; syllables per script
for synthetic two-part names, so that no two candidates share a name part); a language without a
template there gets the neutral needle ``{name}: {passkey}``, a script without syllables gets
romanized names; the rows say which (``needle_template``, ``needle_names``).

Lengths are capped by what the encoder reads (``max_length`` when given, else its window, less its
special tokens): a longer length is measured at the cap and the rows say the cap. Rows go to
``eval/results.parquet`` (metric ``accuracy``, keyed by ``context_tokens``, ``needle_depth`` and the
RoPE overrides) and ``eval/per_query.parquet`` (one 0/100 score per query).
"""

from __future__ import annotations

import bisect
import logging
import random
import statistics
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from workbench import conditions
from workbench.errors import UnknownLanguageError, WorkbenchError
from workbench.languages import Language, Registry
from workbench.metrics import ACCURACY
from workbench.resources import package_path
from workbench.run import Folder, Run, file_sha256, now

log = logging.getLogger(__name__)

TASK = "passkey"  # the name in TARGETS / [eval] task
TASK_NAME = "PersonalizedPasskeyRetrieval"  # the task column (and instructions.toml key)
METRIC = ACCURACY
SPLIT = "test"
NEEDLES_FILE = package_path("eval", "passkey_needles.toml")
NEUTRAL = "neutral ({name}: {passkey})"
ROMANIZED = "romanized (synthetic)"
PASSKEY_DIGITS = 5
_TEXT_FIELDS = ("user_query", "positive_document", "hard_negative_document", "input_text", "input", "S1", "S2", "S3")


@dataclass(frozen=True)
class Needle:
    """How one language's needle and query read, and where they come from."""

    template: str
    query: str
    template_label: str  # needle_template column
    syllables: tuple[str, ...]  # what the synthetic names are built from (the script's, else Latin)
    separator: str  # between the two parts of a name
    names_label: str  # needle_names column


@cache
def load_needles(path: Path = NEEDLES_FILE) -> dict[str, Any]:
    """The needles file, checked: each template names {name} and {passkey}, each query {name}."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise WorkbenchError(f"cannot read the passkey needles ({err})", where=str(path)) from None
    neutral = data.get("neutral") or {}
    entries = [("neutral", neutral)] + [(f"languages.{c}", e) for c, e in (data.get("languages") or {}).items()]
    for where, entry in entries:
        if "template" in entry and not ("{name}" in entry["template"] and "{passkey}" in entry["template"]):
            raise WorkbenchError("field 'template' must contain {name} and {passkey}", where=f"{path}: [{where}]")
        if "query" in entry and "{name}" not in entry["query"]:
            raise WorkbenchError("field 'query' must contain {name}", where=f"{path}: [{where}]")
        if "template" in entry and not entry.get("template_provenance") and where != "neutral":
            raise WorkbenchError("a template needs 'template_provenance'", where=f"{path}: [{where}]")
    if "template" not in neutral or "query" not in neutral:
        raise WorkbenchError("missing [neutral] template and query", where=str(path))
    names = data.get("names") or {}
    for script, entry in names.items():
        if len(entry.get("syllables") or []) < 20 or not entry.get("provenance"):
            raise WorkbenchError("names need 20 or more 'syllables' and a 'provenance'", where=f"{path}: [names.{script}]")
    if "Latn" not in names:
        raise WorkbenchError("missing [names.Latn] (the romanized names of every other script)", where=str(path))
    return data


def needle_for(language: Language, data: dict[str, Any] | None = None) -> Needle:
    data = data if data is not None else load_needles()
    entry = (data.get("languages") or {}).get(language.code, {})
    neutral = data["neutral"]
    if "template" in entry:
        template, query = entry["template"], entry["query"]
        template_label = f"language: {entry['template_provenance']}"
    else:
        template, query, template_label = neutral["template"], neutral["query"], NEUTRAL
    script = language.scripts[0]
    names = data["names"].get(script)
    names_label = f"{script}: {names['provenance']}" if names else ROMANIZED
    names = names or data["names"]["Latn"]
    return Needle(template, query, template_label, tuple(names["syllables"]), names.get("name_separator", " "), names_label)


def synthetic_names(rng: random.Random, count: int, syllables: tuple[str, ...], separator: str = " ") -> list[str]:
    """``count`` two-part names of two to three ``syllables`` each, no part used twice, from ``rng``:
    the candidates of a query never share a name part."""
    parts: dict[str, None] = {}
    while len(parts) < 2 * count:
        part = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3)))
        parts[part[:1].upper() + part[1:]] = None
    ordered = list(parts)
    return [f"{ordered[2 * i]}{separator}{ordered[2 * i + 1]}" for i in range(count)]


# ---------------------------------------------------------------------------------------------
# filler
# ---------------------------------------------------------------------------------------------
@dataclass
class Filler:
    """One language's filler texts and where they came from."""

    code: str
    units: list[str]
    files: list[Path] = field(default_factory=list)
    origin: str = "local"  # local | run


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise WorkbenchError(f"not UTF-8 (byte {err.start})", where=str(path), fix="filler files are UTF-8, one text a line") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def folder_filler(data_dir: Path, registry: Registry, wanted: list[str]) -> dict[str, Filler]:
    """Per language: ``<code>.txt``, else its Tatoeba side (English: every ``.eng`` side, deduplicated)."""
    if not data_dir.is_dir():
        raise WorkbenchError("data folder not found", where=str(data_dir),
                             fix="give --data-dir a folder with <code>.txt files or LASER-layout Tatoeba files")
    found: dict[str, list[Path]] = {}
    for path in sorted(data_dir.glob("*.txt")):
        if path.stem in registry:
            found[path.stem] = [path]
    by_tatoeba = {lang.tatoeba: lang.code for lang in registry if lang.tatoeba}
    for path in sorted(data_dir.glob("tatoeba.*-eng.*")):
        code3, side = path.name.split(".")[1].split("-")[0], path.suffix[1:]
        if side == code3 and by_tatoeba.get(code3) and by_tatoeba[code3] not in found:
            found[by_tatoeba[code3]] = [path]
    english = sorted(data_dir.glob("tatoeba.*-eng.eng"))
    if english and "en" not in found:
        found["en"] = english
    for code in wanted:
        registry.get(code)  # unknown code: one line with a suggestion
        if code not in found:
            raise UnknownLanguageError(f"no filler text for '{code}'", where=str(data_dir),
                                       fix=f"add {code}.txt (one text a line); this folder has {' '.join(sorted(found)) or 'none'}")
    fillers = {}
    for code in wanted or sorted(found):
        units = list(dict.fromkeys(u for path in found[code] for u in _lines(path)))
        fillers[code] = Filler(code, units, list(found[code]))
    return fillers


def accepted_filler(run: Run, registry: Registry, wanted: list[str]) -> dict[str, Filler]:
    """Per language: every text field of the run's accepted examples (the default filler)."""
    from workbench.tables import ACCEPTED

    folder = run.stage_dir(Folder.ACCEPTED)
    present = sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []
    for code in wanted:
        registry.get(code)
        if code not in present:
            raise UnknownLanguageError(f"no accepted examples for '{code}' to use as filler", where=str(folder),
                                       fix="run the filter stage, or give --data-dir a folder of texts per language")
    if not present:
        raise WorkbenchError("no accepted examples to use as filler", where=str(folder),
                             fix="run generate and filter first, or give --data-dir a folder of texts per language")
    fillers = {}
    for code in wanted or present:
        table = run.read_table(Folder.ACCEPTED, code, ACCEPTED)
        units = [t.strip() for column in _TEXT_FIELDS for t in table[column].drop_nulls().to_list() if t.strip()]
        fillers[code] = Filler(code, list(dict.fromkeys(units)), [folder / f"{code}.parquet"], origin="run")
    return fillers


# ---------------------------------------------------------------------------------------------
# documents
# ---------------------------------------------------------------------------------------------
class TokenCounter:
    """The evaluated encoder's tokenizer: counts and cuts text in its tokens (special tokens left out)."""

    def __init__(self, tokenizer: Any):
        if not getattr(tokenizer, "is_fast", False):
            raise WorkbenchError("the passkey probe needs a fast tokenizer (character offsets)",
                                 where=str(getattr(tokenizer, "name_or_path", "tokenizer")),
                                 fix="save the model with a tokenizer.json")
        self.tokenizer = tokenizer
        self._unit_counts: dict[str, int] = {}

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Each token's (start, end) characters."""
        return self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]

    def unit(self, text: str) -> int:
        if text not in self._unit_counts:
            self._unit_counts[text] = self.count(text)
        return self._unit_counts[text]


def build_documents(units: list[str], joiner: str, needles: list[str], length: int, depth: float,
                    counter: TokenCounter, rng: random.Random) -> list[str] | None:
    """One filler drawn from ``units`` (shuffled, cycled) and cut so that it holds ``length`` tokens
    with the longest needle, and one document per needle with the needle at ``depth`` percent of the
    filler's tokens (0: first, 100: last): at the nearest unit (sentence) boundary when one is within
    5% of the length, else between two tokens there. Every document shares the filler, as in the
    paper (the candidates differ only in their needle). None when a needle alone does not fit."""
    order = list(range(len(units)))
    budget = length - max(counter.count(n) for n in needles)
    picked: list[str] = []
    total = 0
    while total < budget + 16:  # a little more than needed: the cut below is exact
        rng.shuffle(order)
        for i in order:
            picked.append(units[i])
            total += counter.unit(units[i])
            if total >= budget + 16:
                break
    joined = joiner.join(picked)
    offsets = counter.offsets(joined)
    token_starts = [o[0] for o in offsets]
    starts, position = [], 0  # where each unit begins in the joined filler
    for unit in picked:
        starts.append(position)
        position += len(unit) + len(joiner)
    for _ in range(6):  # tokens can merge across the joins: trim until every document fits
        if budget < 0:
            return None
        filler = joined if len(offsets) <= budget else joined[: offsets[budget - 1][1]] if budget else ""
        if depth >= 100 or not filler:
            at = len(filler)
        elif depth <= 0:
            at = 0
        else:
            token = min(round(budget * depth / 100), len(offsets) - 1)
            inside = [s for s in starts if s < len(filler)]
            token_of = [bisect.bisect_left(token_starts, s) for s in inside]
            best = min(range(len(inside)), key=lambda i: abs(token_of[i] - token))
            close = abs(token_of[best] - token) <= max(2, round(0.05 * budget))
            at = inside[best] if close else offsets[token][0]
        head, tail = filler[:at].rstrip(), filler[at:].lstrip()
        documents = [joiner.join(part for part in (head, needle, tail) if part) for needle in needles]
        over = max(counter.count(d) for d in documents) - length
        if over <= 0:
            return documents
        budget -= over
    return None


def cell_seed(seed: int, code: str, length: int, depth: float) -> str:
    return f"passkey/{seed}/{code}/{length}/{depth:g}"


@dataclass
class Cell:
    """One (language, length, depth): its documents, people and the queries asked."""

    code: str
    length: int
    depth: float
    documents: list[str]
    queries: list[str]
    answers: list[int]  # index of each query's document


def build_cell(filler: Filler, language: Language, needle: Needle, length: int, depth: float, *, candidates: int,
               queries: int, seed: int, counter: TokenCounter) -> Cell | None:
    rng = random.Random(cell_seed(seed, language.code, length, depth))
    names = synthetic_names(rng, candidates, needle.syllables, needle.separator)
    passkeys = rng.sample(range(10 ** (PASSKEY_DIGITS - 1), 10 ** PASSKEY_DIGITS), candidates)
    joiner = "" if language.unspaced else " "
    needles = [needle.template.format(name=name, passkey=passkey) for name, passkey in zip(names, passkeys)]
    documents = build_documents(filler.units, joiner, needles, length, depth, counter, rng)
    if documents is None:
        return None
    answers = rng.sample(range(candidates), queries)
    return Cell(language.code, length, depth, documents, [needle.query.format(name=names[i]) for i in answers], answers)


def top1_scores(query_vectors: np.ndarray, document_vectors: np.ndarray, answers: list[int]) -> list[float]:
    """100 where a query's own document has the strictly highest cosine similarity, else 0 (ties miss)."""
    q = query_vectors / np.clip(np.linalg.norm(query_vectors, axis=1, keepdims=True), 1e-12, None)
    d = document_vectors / np.clip(np.linalg.norm(document_vectors, axis=1, keepdims=True), 1e-12, None)
    similarity = q @ d.T
    scores = []
    for row, answer in zip(similarity, answers):
        others = np.delete(row, answer)
        scores.append(100.0 if row[answer] > others.max() else 0.0)
    return scores


def encoder_overrides(section: Any) -> dict[str, Any]:
    """The encoder settings a passkey section asks for (max_length, RoPE base, window); {} otherwise."""
    if section.task != TASK:
        return {}
    grid = grid_of(section)
    return {k: v for k, v in (("max_length", grid.max_length), ("rope_theta", grid.rope_theta),
                              ("sliding_window", grid.sliding_window)) if v is not None}


def grid_of(section: Any) -> Any:
    from workbench.config import PasskeySection

    grid = section.passkey
    return PasskeySection.model_validate(grid) if isinstance(grid, dict) else grid


def _special_tokens(model: Any) -> int:
    """Tokens the encoder adds around a text (CLS/SEP, BOS, the contract's EOS)."""
    tokenizer = model.backend.tokenizer
    added = len(tokenizer("a")["input_ids"]) - len(tokenizer("a", add_special_tokens=False)["input_ids"])
    return added + int(bool(getattr(model.backend, "add_eos", False)))


# ---------------------------------------------------------------------------------------------
# the probe
# ---------------------------------------------------------------------------------------------
class PasskeyProbe:
    """The passkey target of one ``[eval]`` section: built documents per system, scored top-1."""

    def __init__(self, section: Any, registry: Registry):
        self.section = section
        self.grid = grid_of(section)
        self.registry = registry
        self.target: Any = None  # the Target this probe fills in (datasets, counts, sources)
        self.data_dir = Path(section.data_dir) if section.data_dir else None
        if self.data_dir is not None:  # a bad folder fails before any model loads
            self.fillers: dict[str, Filler] | None = folder_filler(self.data_dir, registry, list(section.languages))
        else:
            self.fillers = None

    def _fillers(self, run: Run) -> dict[str, Filler]:
        if self.fillers is None:
            self.fillers = accepted_filler(run, self.registry, list(self.section.languages))
        return self.fillers

    def dataset(self, code: str) -> str:
        source = "accepted" if self.data_dir is None else self.data_dir.resolve().name
        return f"passkey-{code}-{source}"

    def evaluate(self, run: Run, system: str, model_label: str, model: Any) -> tuple[list[dict], list[dict]]:
        from workbench.encoder import task_instructions

        if not hasattr(model, "encode_texts"):
            raise WorkbenchError("the passkey probe needs an embedding model", where="--model", fix="evaluate a model folder or minilm")
        fillers = self._fillers(run)
        counter = TokenCounter(model.backend.tokenizer)
        cap = model.backend.window - _special_tokens(model)
        lengths = sorted({min(n, cap) for n in self.grid.lengths})
        if max(self.grid.lengths) > cap:
            log.warning("passkey: %s reads %d tokens (%d of text): lengths above are measured at %d",
                        system, model.backend.window, cap, cap)
        instruction = task_instructions().get(TASK_NAME, "") if model.spec.uses_instruction else ""
        needles = load_needles()
        created = now()
        rows, per_query = [], []
        for code, filler in fillers.items():
            language = self.registry.get(code)
            if not filler.units:
                raise WorkbenchError(f"no filler text for '{code}'", where=str(filler.files[0] if filler.files else code),
                                     fix="give texts in that language")
            needle = needle_for(language, needles)
            dataset = self.dataset(code)
            measured = 0
            for length in lengths:
                for depth in self.grid.depths:
                    cell = build_cell(filler, language, needle, length, depth, candidates=self.grid.candidates,
                                      queries=self.grid.queries, seed=self.grid.seed, counter=counter)
                    if cell is None:
                        log.warning("passkey %s: the needle does not fit in %d tokens; length left out", code, length)
                        continue
                    measured += 1
                    documents = model.encode_texts(cell.documents, as_query=False, task=TASK_NAME,
                                                   desc=f"passkey {code} {length} tok {depth:g}% documents")
                    queries = model.encode_texts(cell.queries, instruction=instruction, as_query=True, task=TASK_NAME,
                                                 desc=f"passkey {code} {length} tok {depth:g}% queries")
                    scores = top1_scores(queries, documents, cell.answers)
                    key = {"system": system, "model": model_label, "task": TASK_NAME, "dataset": dataset,
                           "language": code, "split": SPLIT, "metric": METRIC, "context_tokens": length,
                           "needle_depth": float(depth), "rope_theta": self.grid.rope_theta,
                           "sliding_window": self.grid.sliding_window}
                    words = None if language.unspaced else float(statistics.median(len(d.split()) for d in cell.documents))
                    rows.append({**key, "value": round(sum(scores) / len(scores), 3), "n_queries": len(scores),
                                 "n_docs": len(cell.documents), "source": "measured", "created_at": created,
                                 "context_chars_median": float(statistics.median(len(d) for d in cell.documents)),
                                 "context_words_median": words, "needle_template": needle.template_label,
                                 "needle_names": needle.names_label})
                    per_query.extend({**key, "query_id": f"q{i:03d}", "score": s} for i, s in enumerate(scores))
            self._describe(code, dataset, filler, needle, measured, lengths, model.backend.window, cap)
        return rows, per_query

    def _describe(self, code: str, dataset: str, filler: Filler, needle: Needle, cells: int, lengths: list[int],
                  window: int, cap: int) -> None:
        """What the stage records for a dataset: query counts and the data source (eval/data_sources.json)."""
        self.target.datasets[code] = dataset
        self.target.languages[code] = code
        self.target.counts[code] = {"queries_total": cells * self.grid.queries, "docs": cells * self.grid.candidates,
                                    "cells": cells, "filler_units": len(filler.units)}
        where = self.data_dir if self.data_dir is not None else filler.files[0].parent
        self.target.sources[dataset] = {
            "origin": filler.origin, "location": str(where.resolve()), "task": TASK_NAME,
            "files": {p.name: file_sha256(p) for p in filler.files},
            "filler_units": len(filler.units), "lengths_asked": list(self.grid.lengths), "lengths_measured": lengths,
            "encoder_window": window, "text_tokens_read": cap, "depths": list(self.grid.depths),
            "queries": self.grid.queries, "candidates": self.grid.candidates, "seed": self.grid.seed,
            "needle_template": needle.template_label, "needle_names": needle.names_label,
            "needles_file": {NEEDLES_FILE.name: file_sha256(NEEDLES_FILE)},
        }
        from workbench.eval.targets import local_revision

        # the condition columns: documents built from these texts (no published corpus to relate them to);
        # the revision covers the filler files, the needles file and the seed that places the needles
        self.target.corpora[code] = conditions.LOCAL
        self.target.revisions[code] = local_revision({"files": {
            **self.target.sources[dataset]["files"], **self.target.sources[dataset]["needles_file"],
            "seed": str(self.grid.seed)}})


def build_target(section: Any, registry: Registry) -> Any:
    """The ``passkey`` entry of :data:`workbench.eval.targets.TARGETS`."""
    from workbench.eval.targets import Target

    if section.split not in (None, SPLIT):
        raise WorkbenchError(f"the passkey probe has no '{section.split}' split", where="--split", fix="leave --split out")
    probe = PasskeyProbe(section, registry)
    target = Target(probe, TASK_NAME, SPLIT, datasets={}, counts={}, sources={}, kind=conditions.PASSKEY)
    probe.target = target
    return target


__all__ = ["METRIC", "TASK", "TASK_NAME", "Cell", "Filler", "Needle", "PasskeyProbe", "build_cell",
           "build_documents", "build_target", "encoder_overrides", "folder_filler", "load_needles", "needle_for",
           "synthetic_names", "top1_scores"]
