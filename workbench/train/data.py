"""Training data: accepted examples -> (query-with-instruction, positive, hard negative) records.

Input: ``accepted/<lang>.parquet`` (filter stage; columns used: ``slot_id``, ``language``,
``family``, ``task`` and the family's example fields). Output: ``train/records.parquet``
(:data:`workbench.tables.TRAIN_RECORDS`), optionally ``train/hf_dataset/`` (an HF ``datasets``
Dataset with the same columns).

Mapping per family, as the E5-mistral paper uses its synthetic data (Wang et al. 2024, §3); the
roles are declared in :mod:`workbench.families` (``Family.query`` / ``positive`` / ``negative``):

==============  ===================================  ===================  =========================
family          query (gets ``Instruct: {task}``)    positive             hard negative
==============  ===================================  ===================  =========================
short_long      ``user_query``                       positive_document    hard_negative_document
long_short      ``input_text``                       label                misleading_label
short_short     ``input``                            positive_document    (none: in-batch only)
long_long       ``input``                            positive_document    (none: in-batch only)
sts             ``S1``                               S2                   S3
bitext          ``S1``                               S2                   S3
==============  ===================================  ===================  =========================

The instruction goes on the query only, for every family (paper §3.2: "We do not modify the
document side with any instruction prefix."); see docs/train.md for the placement at eval time.
STS and bitext prompts have no brainstormed task, so when the row's ``task`` is empty their
instruction is the family's ``default_instruction``, overridable as ``train.sts_instruction`` /
``train.bitext_instruction``.

Rows missing a required field are not dropped silently: they are counted per reason and the counts
go into the stage's manifest stats.

Example::

    workbench train runs/demo --model /models/minilm --deepspeed none
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from workbench.config import TrainSection
from workbench.encoder import with_instruction
from workbench.errors import TableError, WorkbenchError
from workbench.families import FAMILIES
from workbench.run import Folder, Run, read_parquet_unchecked
from workbench.tables import ACCEPTED, TRAIN_RECORDS, conform

log = logging.getLogger(__name__)


@dataclass
class BuiltRecords:
    """Records plus what did not make it, by reason (``"short_long: empty positive_document"``)."""

    records: pl.DataFrame
    skipped: Counter = field(default_factory=Counter)
    without_negative: Counter = field(default_factory=Counter)  # kept, trained on in-batch negatives
    languages: list[str] = field(default_factory=list)


def read_accepted(run: Run) -> dict[str, pl.DataFrame]:
    """Every ``accepted/<lang>.parquet`` of the run; a run with no accepted rows is an error."""
    codes = run.table_languages(Folder.ACCEPTED)
    if not codes:
        raise WorkbenchError(
            "no accepted data (no accepted/<lang>.parquet tables)",
            where=str(run.stage_dir(Folder.ACCEPTED)),
            fix="run 'workbench generate' and 'workbench filter' on this run first",
        )
    tables: dict[str, pl.DataFrame] = {}
    for code in codes:
        path = run.table_path(Folder.ACCEPTED, code)
        df = read_parquet_unchecked(path, fix="the file is corrupt or truncated; re-run 'workbench filter'")
        try:
            tables[code] = conform(df, ACCEPTED, where=str(path))
        except TableError as err:
            raise TableError(err.message, where=str(path), fix="the table was not written by the filter stage; "
                             "re-run 'workbench filter'") from None
    if sum(df.height for df in tables.values()) == 0:
        raise WorkbenchError(
            f"no accepted data: {len(tables)} accepted table(s), all empty",
            where=str(run.stage_dir(Folder.ACCEPTED)),
            fix="look at audit/ for the reject reasons, adjust the filter or generate more",
        )
    return tables


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def build_records(tables: dict[str, pl.DataFrame], config: TrainSection) -> BuiltRecords:
    """Map accepted rows to training records (see the module table); weights from the config."""
    rows: list[dict[str, object]] = []
    skipped: Counter = Counter()
    without_negative: Counter = Counter()
    for code in sorted(tables):
        for row in tables[code].iter_rows(named=True):
            family = row.get("family")
            if family not in FAMILIES:
                skipped[f"unknown family {family!r}"] += 1
                continue
            roles = FAMILIES[family]
            q_field, p_field, n_field = roles.query, roles.positive, roles.negative
            query, positive = _text(row.get(q_field)), _text(row.get(p_field))
            negative = _text(row.get(n_field)) if n_field else None
            if query is None or positive is None:
                skipped[f"{family}: empty {q_field if query is None else p_field}"] += 1
                continue
            instruction = _text(row.get("task"))
            if instruction is None:
                instruction = config.default_instruction(roles)
                if instruction is None:
                    skipped[f"{family}: empty task (instruction)"] += 1
                    continue
            if n_field and negative is None:
                without_negative[f"{family}: empty {n_field}"] += 1
            language = str(row.get("language") or code)
            weight = config.language_weights.get(language, 1.0) * config.family_weights.get(family, 1.0)
            rows.append(
                {
                    "record_id": str(row["slot_id"]),
                    "slot_id": str(row["slot_id"]),
                    "language": language,
                    "family": family,
                    "instruction": instruction,
                    "query": with_instruction(instruction, query),
                    "positive": positive,
                    "negative": negative,
                    "symmetric": roles.symmetric,
                    "weight": float(weight),
                }
            )
    records = conform(pl.DataFrame(rows, schema=TRAIN_RECORDS), TRAIN_RECORDS, where=f"{Folder.TRAIN}/records.parquet")
    if records.height == 0 or float(records["weight"].sum()) <= 0:
        reasons = "; ".join(f"{k}:{v}" for k, v in skipped.most_common(5)) or "all weights are 0"
        raise WorkbenchError(
            f"no usable training records ({reasons})",
            where=f"{Folder.ACCEPTED}/",
            fix="check the accepted tables and train.language_weights / train.family_weights",
        )
    return BuiltRecords(records=records, skipped=skipped, without_negative=without_negative, languages=sorted(tables))


def to_hf_dataset(records: pl.DataFrame):
    """The records as an HF ``datasets.Dataset`` (same columns, Arrow-backed, no copy of text)."""
    import datasets

    return datasets.Dataset(records.to_arrow())


def save_hf_dataset(records: pl.DataFrame, folder: Path) -> Path:
    """Write the records with ``Dataset.save_to_disk`` (``datasets.load_from_disk(folder)`` reads it)."""
    dataset = to_hf_dataset(records)
    folder.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(folder))
    return folder


def _text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.strip().encode(), digest_size=8).digest()


# How far past its own batch the sampler looks for records that repeat no text of the batch, in
# batches: a record held back for a repeated text is drawn about this many batches late at most.
# 2 keeps the hard negatives that are other records' positives apart even in epochs of 4 batches.
LOOKAHEAD_BATCHES = 2


class BatchSampler:
    """Endless global batches of record indices, drawn by weight, from a seeded ``random.Random``.

    Weighted sampling without replacement inside an epoch (Efraimidis-Spirakis keys), a fresh
    order each epoch, and never one record twice in a batch: a batch that spans an epoch boundary
    is completed from the next epoch's order without the records it already holds. A batch is at
    most as large as the usable records (the trainer shrinks ``batch_size`` to fit and says so).
    With ``one_task_per_batch`` every batch holds one (language, family) group, groups chosen in
    proportion to their total weight; a group smaller than the batch gives a smaller batch (rounded
    down to a multiple of ``multiple_of``, the number of processes) instead of repeating records.

    Nor one text twice: a record whose query, positive or negative equals a text already in the
    batch waits for a later batch, since that text would be one query's positive and another's
    in-batch negative (repeated labels of classification data, a hard negative that is another
    record's positive). It waits for the records of the next :data:`LOOKAHEAD_BATCHES` batches at
    most: when the records that far ahead cannot fill a batch without repeats, the batch is filled
    anyway, in order, and ``repeated_text_batches`` counts it. A longer wait keeps texts apart by
    training on other records first: looking a whole epoch ahead, one epoch's steps drew records
    with a common class label at a fraction of their share and other records twice.
    """

    def __init__(self, records: pl.DataFrame, batch_size: int, rng: random.Random, one_task_per_batch: bool = False,
                 multiple_of: int = 1):
        self.batch_size = batch_size
        self.rng = rng
        self.weights = records["weight"].to_list()
        self.one_task = one_task_per_batch
        self.multiple_of = max(1, multiple_of)
        groups: dict[tuple[str, str], list[int]] = {}
        for index, (lang, fam) in enumerate(zip(records["language"].to_list(), records["family"].to_list())):
            if self.weights[index] > 0:
                groups.setdefault((lang, fam), []).append(index)
        if one_task_per_batch:
            small = {k: len(v) for k, v in groups.items() if len(v) < self.multiple_of}
            if small:
                log.warning("one_task_per_batch: groups %s have fewer records than processes and are not trained on",
                            ", ".join(f"{lang}/{fam} ({n})" for (lang, fam), n in sorted(small.items())))
            groups = {k: v for k, v in groups.items() if len(v) >= self.multiple_of}
            shrunk = sorted(k for k, v in groups.items() if len(v) < batch_size)
            if shrunk:
                log.warning("one_task_per_batch: %d group(s) hold fewer records than batch_size %d; their batches "
                            "are smaller (no record twice in a batch): %s", len(shrunk), batch_size,
                            ", ".join(f"{lang}/{fam}" for lang, fam in shrunk))
        self.groups = groups
        self.usable = [i for idx in groups.values() for i in idx]  # records with weight > 0
        self.group_keys = sorted(groups)
        self.group_weights = [sum(self.weights[i] for i in groups[k]) for k in self.group_keys]
        columns = [records[c].to_list() for c in ("query", "positive", "negative") if c in records.columns]
        # each text by an 8-byte digest, not the text (a second copy of every document for the whole run),
        # and the same on every rank (str's hash is not)
        self.texts = [frozenset(_text_digest(t) for t in texts if t and t.strip()) for texts in zip(*columns)]
        self.repeated_text_batches = 0
        self._queue: list[int] = []

    def _epoch_order(self, indices: list[int]) -> list[int]:
        keyed = [(self.rng.random() ** (1.0 / self.weights[i]), i) for i in indices]
        return [i for _, i in sorted(keyed, reverse=True)]

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def _fill(self, candidates: list[int], size: int, lookahead: int,
              more: Callable[[], list[int]] | None = None) -> tuple[list[int], list[int]]:
        """(batch, the candidates left, in order): ``size`` distinct records from ``candidates`` in
        order, first those among the first ``lookahead`` whose texts meet none already taken, then,
        if still short, the earliest others; ``more()`` extends the candidates when they hold too few
        distinct records. Scans only as far as the batch needs."""
        batch: list[int] = []
        taken: set[int] = set()
        seen: set[bytes] = set()
        passed: list[int] = []
        repeated = False

        def take(i: int) -> None:
            nonlocal repeated
            repeated = repeated or bool(self.texts[i] & seen)
            batch.append(i)
            taken.add(i)
            seen.update(self.texts[i])

        end, k = min(lookahead, len(candidates)), 0
        while k < end and len(batch) < size:
            i = candidates[k]
            k += 1
            if i not in taken and not (self.texts[i] & seen):
                take(i)
            else:
                passed.append(i)
        if len(batch) < size:
            rest = []
            for i in passed:
                if len(batch) < size and i not in taken:
                    take(i)
                else:
                    rest.append(i)
            passed = rest
            while len(batch) < size:
                if k == len(candidates):
                    if more is None:
                        break
                    candidates = candidates + more()
                i = candidates[k]
                k += 1
                if i not in taken:
                    take(i)
                else:
                    passed.append(i)
            self.repeated_text_batches += repeated
        return batch, passed + candidates[k:]

    def __next__(self) -> list[int]:
        if self.one_task:
            key = self.rng.choices(self.group_keys, weights=self.group_weights)[0]
            members = self.groups[key]
            size = min(self.batch_size, len(members))
            order = self._epoch_order(members)  # a fresh draw per batch: any member may stand in
            batch, _ = self._fill(order, size - size % self.multiple_of, len(order))
            return batch
        size = min(self.batch_size, len(self.usable))
        while len(self._queue) < size + len(self.usable):
            self._queue += self._epoch_order(self.usable)
        # what was passed over keeps its place: records held back for a repeated text come first next time
        # (a queue of many copies of held-back records may hold fewer distinct ones than a batch: a
        # fresh epoch completes it)
        batch, self._queue = self._fill(self._queue, size, size * (1 + LOOKAHEAD_BATCHES),
                                        more=lambda: self._epoch_order(self.usable))
        return batch
