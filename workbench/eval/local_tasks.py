"""mteb retrieval tasks loaded from local files: MIRACL-format and BEIR-format data folders.

The task is a real :class:`mteb.abstasks.retrieval.AbsTaskRetrieval`; only ``load_data`` differs:
it fills ``self.dataset[<language>][<split>]`` from disk instead of the Hugging Face hub, so mteb's
own search, scoring and result files are used unchanged.

MIRACL layout (the files in ``../shared/data/miracl``), per language ``xx`` and split ``dev``:

* topics: ``topics.miracl-v1.0-xx-dev.tsv`` or ``xx/topics.tsv`` — ``qid<TAB>query``, no header;
* qrels: ``qrels.miracl-v1.0-xx-dev.tsv`` or ``xx/qrels.tsv`` — TREC ``qid Q0 docid rel``;
* corpus: ``corpus/xx/corpus.jsonl[.gz]`` or ``xx/corpus.jsonl[.gz]`` — ``{"docid","title","text"}``.

BEIR layout (``../shared/data/xquad/<lang>/``): ``corpus.jsonl`` (``_id``, optional ``title``,
``text``), ``queries.jsonl`` (``_id``, ``text``), ``qrels.tsv`` (header ``query-id corpus-id score``)
or ``qrels/<split>.tsv``.

Checks, all before mteb sees the data: a missing file, a file that is not UTF-8 text (or not
gzip), a malformed line, a field of the wrong type (``"text": 12345``), an empty corpus or topic
list, qrels with no judgement at all (a header-only ``qrels.tsv``) or none that is relevant, qrels
naming query ids absent from the topics, or relevant (rel > 0) documents absent from the corpus is
one :class:`WorkbenchError` naming the file (and line) and what to fix.
Judged-non-relevant documents absent from the corpus are harmless for the metrics and counted.
Queries without any qrels are dropped by mteb (as for hub tasks) and counted; queries whose judged
passages are all non-relevant stay in and score 0, as mteb does.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import json
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata

from workbench.errors import WorkbenchError, first_line
from workbench.metrics import NDCG_AT_10

log = logging.getLogger(__name__)

MIRACL_INSTRUCTION = "Given a question, retrieve Wikipedia passages that answer the question"


@dataclass
class LocalSplit:
    """One language and split read from disk, with the counts the results table reports."""

    language: str
    split: str
    corpus: dict[str, tuple[str, str]]  # docid -> (title, text)
    queries: dict[str, str]  # qid -> text
    qrels: dict[str, dict[str, int]]  # qid -> docid -> relevance
    files: list[Path] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


@contextlib.contextmanager
def _reading(path: Path):
    """Around reading one data file: bytes that are not UTF-8 text (or not gzip) become one line."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise WorkbenchError(f"not UTF-8 text ({err.reason})", where=str(path),
                             fix="give the file as UTF-8 text (JSON Lines or TSV as the layout says)") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise WorkbenchError(f"not a readable gzip file ({first_line(err)})", where=str(path),
                             fix="give a whole .gz file, or the uncompressed file without .gz") from None


def _text_field(record: dict[str, Any], name: str, number: int, path: Path, *, required: bool) -> str:
    """A JSON Lines record's text field: a string (null or absent: empty unless required)."""
    value = record.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise WorkbenchError(f"line {number}: field '{name}' is {kind} ({str(value)[:40]}), not text", where=str(path),
                             fix=f"give '{name}' as a JSON string")
    return value


def _first_existing(candidates: list[Path], what: str) -> Path:
    for path in candidates:
        if path.is_file():
            return path
    raise WorkbenchError(
        f"{what} file missing",
        where=str(candidates[0]),
        fix="expected one of: " + ", ".join(str(p) for p in candidates),
    )


def _read_jsonl(path: Path, id_fields: tuple[str, ...]) -> list[tuple[str, str, str]]:
    rows = []
    with _reading(path), _open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise WorkbenchError(f"line {number} is not valid JSON ({err.msg})", where=str(path)) from None
            if not isinstance(record, dict):
                raise WorkbenchError(f"line {number} is a JSON {type(record).__name__}, not an object", where=str(path),
                                     fix="one JSON object per line")
            ident = next((record[k] for k in id_fields if k in record), None)
            if ident is None or "text" not in record:
                raise WorkbenchError(
                    f"line {number} lacks field {'/'.join(id_fields)} or 'text'", where=str(path)
                )
            if isinstance(ident, bool) or not isinstance(ident, (str, int)):
                raise WorkbenchError(f"line {number}: id {str(ident)[:40]!r} is not a string or an integer",
                                     where=str(path), fix="give ids as JSON strings")
            text = _text_field(record, "text", number, path, required=False)
            rows.append((str(ident), _text_field(record, "title", number, path, required=False), text))
    if not rows:
        raise WorkbenchError("no records", where=str(path), fix="give at least one JSON object per line")
    return rows


def _read_topics(path: Path) -> dict[str, str]:
    topics: dict[str, str] = {}
    with _reading(path), _open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t", 1)
            if len(parts) != 2:
                raise WorkbenchError(f"line {number} is not 'qid<TAB>text'", where=str(path))
            topics[parts[0]] = parts[1]
    return topics


def _read_trec_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with _reading(path), _open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise WorkbenchError(f"line {number} is not TREC 'qid Q0 docid rel'", where=str(path))
            try:
                rel = int(parts[3])
            except ValueError:
                raise WorkbenchError(f"line {number}: relevance {parts[3]!r} is not an integer", where=str(path)) from None
            qrels.setdefault(parts[0], {})[parts[2]] = rel
    return qrels


def _read_beir_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with _reading(path), open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise WorkbenchError(
                f"header is {header!r}", where=str(path), fix="BEIR qrels start with 'query-id<TAB>corpus-id<TAB>score'"
            )
        for number, row in enumerate(reader, 2):
            if not row:
                continue
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
            except (IndexError, ValueError):
                raise WorkbenchError(f"line {number} is not 'query-id<TAB>corpus-id<TAB>score'", where=str(path)) from None
    return qrels


def _check_ids(split: LocalSplit, where: Path) -> None:
    """Count qrels ids missing from topics/corpus; raise when they would change the metrics or leave
    mteb nothing to score (no judgement at all, or none relevant: mteb would divide by zero)."""
    if not split.qrels:
        raise WorkbenchError("no relevance judgements (only a header, or an empty file)", where=str(where),
                             fix="give one 'query-id corpus-id score' line (TREC: 'qid Q0 docid rel') per judged passage")
    if not any(rel > 0 for docs in split.qrels.values() for rel in docs.values()):
        raise WorkbenchError("no judgement marks a passage relevant (every score is 0 or less)", where=str(where),
                             fix="give each query's relevant passages a score of 1 or more")
    unknown_queries = [q for q in split.qrels if q not in split.queries]
    missing_relevant = sorted(
        {d for q, docs in split.qrels.items() for d, rel in docs.items() if rel > 0 and d not in split.corpus}
    )
    missing_judged = {
        d for docs in split.qrels.values() for d, rel in docs.items() if rel <= 0 and d not in split.corpus
    }
    if unknown_queries or missing_relevant:
        parts = []
        if unknown_queries:
            parts.append(f"{len(unknown_queries)} query ids not in the topics (first: {unknown_queries[0]})")
        if missing_relevant:
            parts.append(f"{len(missing_relevant)} relevant doc ids not in the corpus (first: {missing_relevant[0]})")
        raise WorkbenchError(
            "qrels do not match the data: " + "; ".join(parts),
            where=str(where),
            fix="use the topics, qrels and corpus of the same release and split",
        )
    without_qrels = sum(1 for q in split.queries if q not in split.qrels)
    without_positives = sum(
        1 for q in split.queries if q in split.qrels and not any(r > 0 for r in split.qrels[q].values())
    )
    split.stats.update(
        queries_total=len(split.queries),
        queries_without_qrels=without_qrels,
        queries_without_positives=without_positives,
        judged_docs_not_in_corpus=len(missing_judged),
        docs=len(split.corpus),
    )
    if without_qrels:
        log.warning("%s: %d queries have no qrels; mteb leaves them out (counted in the results)", where, without_qrels)
    if missing_judged:
        log.info("%s: %d judged non-relevant docs are not in the corpus", where, len(missing_judged))


def load_miracl_split(data_dir: Path, language: str, split: str = "dev") -> LocalSplit:
    """Read one MIRACL language from a MIRACL-format folder."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise WorkbenchError("data folder not found", where=str(data_dir), fix="give --data-dir a MIRACL-format folder")
    topics_path = _first_existing(
        [data_dir / f"topics.miracl-v1.0-{language}-{split}.tsv", data_dir / language / "topics.tsv"], "topics"
    )
    qrels_path = _first_existing(
        [data_dir / f"qrels.miracl-v1.0-{language}-{split}.tsv", data_dir / language / "qrels.tsv"], "qrels"
    )
    corpus_path = _first_existing(
        [
            data_dir / "corpus" / language / "corpus.jsonl.gz",
            data_dir / "corpus" / language / "corpus.jsonl",
            data_dir / language / "corpus.jsonl.gz",
            data_dir / language / "corpus.jsonl",
        ],
        "corpus",
    )
    corpus = {docid: (title, text) for docid, title, text in _read_jsonl(corpus_path, ("docid", "_id"))}
    result = LocalSplit(
        language=language,
        split=split,
        corpus=corpus,
        queries=_read_topics(topics_path),
        qrels=_read_trec_qrels(qrels_path),
        files=[topics_path, qrels_path, corpus_path],
    )
    _check_ids(result, qrels_path)
    return result


def load_beir_split(folder: Path, language: str, split: str = "test") -> LocalSplit:
    """Read one BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels.tsv or qrels/<split>.tsv)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WorkbenchError("data folder not found", where=str(folder), fix="give --data-dir a BEIR-layout folder")
    corpus_path = _first_existing([folder / "corpus.jsonl", folder / "corpus.jsonl.gz"], "corpus")
    queries_path = _first_existing([folder / "queries.jsonl", folder / "queries.jsonl.gz"], "queries")
    qrels_path = _first_existing([folder / "qrels.tsv", folder / "qrels" / f"{split}.tsv"], "qrels")
    result = LocalSplit(
        language=language,
        split=split,
        corpus={d: (title, text) for d, title, text in _read_jsonl(corpus_path, ("_id", "docid"))},
        queries={q: text for q, _, text in _read_jsonl(queries_path, ("_id", "qid"))},
        qrels=_read_beir_qrels(qrels_path),
        files=[corpus_path, queries_path, qrels_path],
    )
    _check_ids(result, qrels_path)
    return result


def _files_revision(splits: dict[str, LocalSplit]) -> str:
    digest = hashlib.sha256()
    for code in sorted(splits):
        for path in splits[code].files:
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return "local-" + digest.hexdigest()[:12]


class LocalRetrievalTask(AbsTaskRetrieval):
    """An mteb retrieval task whose data comes from :class:`LocalSplit` objects, one per language.

    Build one with :func:`build_local_task`, which gives each task its own ``TaskMetadata``.
    """

    def __init__(self, splits: dict[str, LocalSplit], **kwargs: Any):
        self._splits = splits
        super().__init__(**kwargs)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {}
        for code, local in self._splits.items():
            ids = list(local.corpus)
            corpus = Dataset.from_dict(
                {
                    "id": ids,
                    "title": [local.corpus[d][0] for d in ids],
                    "text": [local.corpus[d][1] for d in ids],
                }
            )
            qids = list(local.queries)
            queries = Dataset.from_dict({"id": qids, "text": [local.queries[q] for q in qids]})
            self.dataset[code] = {
                local.split: {
                    "corpus": corpus,
                    "queries": queries,
                    "relevant_docs": {q: dict(docs) for q, docs in local.qrels.items()},
                    "top_ranked": None,
                }
            }
        self.data_loaded = True


def build_local_task(
    name: str,
    splits: dict[str, LocalSplit],
    *,
    eval_langs: dict[str, list[str]],
    data_dir: Path,
    split: str,
    instruction: str | None = None,
    description: str = "",
) -> LocalRetrievalTask:
    """A :class:`LocalRetrievalTask` named ``name`` (e.g. ``MIRACLRetrieval``) over ``splits``."""
    metadata = TaskMetadata(
        name=name,
        description=description or f"{name} read from local files in {data_dir}",
        dataset={"path": f"local:{Path(data_dir).resolve()}", "revision": _files_revision(splits)},
        reference=None,
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=eval_langs,
        main_score=NDCG_AT_10,
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation="",
        prompt={"query": instruction} if instruction else None,
    )
    task_class = type(f"Local{name.replace('.', '_')}", (LocalRetrievalTask,), {"metadata": metadata})
    return task_class(splits)
