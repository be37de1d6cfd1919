"""mteb's ``Tatoeba`` bitext-mining task, from the hub or from a local folder in the LASER layout.

LASER layout (``data/tatoeba/v1`` of facebookresearch/LASER; ``../shared/data/tatoeba``;
``examples/data/tatoeba``): per language ``xxx`` two files, ``tatoeba.xxx-eng.xxx`` and
``tatoeba.xxx-eng.eng``, UTF-8, one sentence a line, line i of one the translation of line i of
the other. These are the files behind mteb's ``Tatoeba`` task (``mteb/tatoeba-bitext-mining``,
subsets ``xxx-eng`` with ``sentence1`` = language xxx, ``sentence2`` = English).

The local task is mteb's own Tatoeba task class with local data: only ``load_data`` differs, so
mteb's ``BitextMiningEvaluator`` (nearest English neighbour of each sentence, cosine) and its
metrics (accuracy; precision/recall/F1 weighted over the gold labels) are used unchanged.

A folder whose pair count differs from the published one for a language (mteb's descriptive
statistics of the task) is a subset: its task is ``TatoebaSubset`` and its dataset label ends in
``-subset<N>``, so its numbers are never mistaken for Tatoeba numbers (fewer candidates make
mining easier).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)

TASK = "Tatoeba"
SUBSET_TASK = "TatoebaSubset"
TATOEBA_INSTRUCTION = "Retrieve parallel sentences."  # e5-mistral's bitext instruction, as mteb's


@dataclass
class LaserPair:
    """One ``xxx-eng`` pair read from a LASER-layout folder."""

    code: str  # Tatoeba code, e.g. "amh"
    sentences: list[str]  # language xxx (mteb's sentence1)
    english: list[str]  # the English side (mteb's sentence2)
    files: list[Path] = field(default_factory=list)

    @property
    def hf_subset(self) -> str:
        return f"{self.code}-eng"


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise WorkbenchError(f"not UTF-8 (byte {err.start})", where=str(path), fix="LASER Tatoeba files are UTF-8") from None
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def available_pairs(folder: Path) -> list[str]:
    """Tatoeba codes with both files in ``folder``."""
    return sorted(
        p.name.split(".")[1].split("-")[0]
        for p in Path(folder).glob("tatoeba.*-eng.eng")
        if (p.parent / f"{p.stem}.{p.name.split('.')[1].split('-')[0]}").is_file()
    )


def load_laser_pair(folder: Path, code: str) -> LaserPair:
    """Read ``tatoeba.<code>-eng.<code>`` and ``tatoeba.<code>-eng.eng``; same line count, no empty line."""
    folder = Path(folder)
    source, english = folder / f"tatoeba.{code}-eng.{code}", folder / f"tatoeba.{code}-eng.eng"
    for path in (source, english):
        if not path.is_file():
            raise WorkbenchError(
                "Tatoeba file missing", where=str(path), fix=f"a LASER-layout folder holds tatoeba.{code}-eng.{code} and tatoeba.{code}-eng.eng"
            )
    lines, eng = _read_lines(source), _read_lines(english)
    if len(lines) != len(eng):
        raise WorkbenchError(
            f"{len(lines)} lines but the English side has {len(eng)}",
            where=str(source),
            fix="line i of each file must be the translation of line i of the other",
        )
    for path, rows in ((source, lines), (english, eng)):
        empty = [i + 1 for i, line in enumerate(rows) if not line.strip()]
        if empty:
            raise WorkbenchError(f"line {empty[0]} is empty ({len(empty)} empty lines)", where=str(path), fix="one sentence a line")
    return LaserPair(code=code, sentences=lines, english=eng, files=[source, english])


def _hub_task_class() -> type:
    import mteb

    return type(mteb.get_task(TASK))


def published_pairs(code: str) -> int | None:
    """Pairs of ``<code>-eng`` in the published task (mteb's descriptive statistics), if known."""
    stats = _hub_task_class().metadata.descriptive_stats or {}
    subsets = (stats.get("test") or {}).get("hf_subset_descriptive_stats") or {}
    entry = subsets.get(f"{code}-eng")
    return int(entry["num_samples"]) if entry else None


def _revision(pairs: list[LaserPair]) -> str:
    digest = hashlib.sha256()
    for pair in pairs:
        for path in pair.files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return "local-" + digest.hexdigest()[:12]


def build_local_tatoeba(folder: Path, pairs: list[LaserPair], *, task_name: str = TASK) -> Any:
    """mteb's Tatoeba task class, restricted to ``pairs`` and loading them from ``folder``."""
    from datasets import Dataset

    base = _hub_task_class()
    known = base.metadata.eval_langs
    eval_langs = {p.hf_subset: known.get(p.hf_subset, [f"{p.code}-Latn", "eng-Latn"]) for p in pairs}
    metadata = base.metadata.model_copy(
        update={
            "name": task_name,
            "dataset": {"path": f"local:{Path(folder).resolve()}", "revision": _revision(pairs)},
            "eval_langs": eval_langs,
            "description": f"{base.metadata.description} Read from local LASER-layout files in {folder}.",
        }
    )

    def load_data(self: Any, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {
            p.hf_subset: {"test": Dataset.from_dict({"sentence1": p.sentences, "sentence2": p.english})} for p in pairs
        }
        self.data_loaded = True

    task_class = type(f"Local{task_name}", (base,), {"metadata": metadata, "load_data": load_data})
    return task_class()


def hub_tatoeba(codes: list[str]) -> Any:
    """The hub task for ``codes`` (needs the network or a warm HF cache)."""
    import mteb

    return mteb.get_task(TASK, hf_subsets=[f"{c}-eng" for c in codes])


__all__ = [
    "SUBSET_TASK",
    "TASK",
    "TATOEBA_INSTRUCTION",
    "LaserPair",
    "available_pairs",
    "build_local_tatoeba",
    "hub_tatoeba",
    "load_laser_pair",
    "published_pairs",
]
