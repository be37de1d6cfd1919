"""Sharded, resumable retrieval evaluation across ranks (``torchrun`` / ``torch.distributed``).

Launched as ``torchrun --nproc_per_node N [--nnodes M ...] -m workbench.cli eval RUN ...`` or
``workbench eval RUN --launcher torchrun --gpus N``, every rank runs the eval command:

* rank 0 (the *leader*) runs the eval stage as a single process does: it holds the run's writer
  lock, calls ``mteb.evaluate`` and writes every table; the embedding model is handed to mteb as
  a :class:`ShardedSearch` (an mteb ``SearchProtocol`` model, like BM25), so mteb's own data
  preparation, scoring, prediction and result files are used unchanged;
* ranks > 0 (the *followers*) wait in :func:`follow`: for each (task, language, split) the leader
  announces, a follower builds the same target and model and runs the same task through mteb with
  its own :class:`ShardedSearch`, which does that rank's part and writes nothing but its shards.

Work is cut into shards that do not depend on the number of ranks: a corpus (and the queries) of
``n`` texts is cut into consecutive row ranges of :func:`shard_rows` ``(n)`` rows; shard ``i``
belongs to rank ``i % world``. Each rank encodes its own shards through the one encoder contract
(:class:`~workbench.eval.encoders.WorkbenchEncoder`, length-sorted batches, bf16 on GPU), and right
after encoding a corpus shard searches it exactly (the model's similarity, as mteb's search calls it,
in fp32) for every query, keeping the top ``k`` (mteb's ``top_k``, 1000). Rank 0 merges the
per-shard top-k into the final ranking and hands it to mteb. The corpus is never gathered.

Files, under ``eval/embeddings/<model fingerprint>/shards/<task>/<language>-<split>/``:

* ``corpus-000012.npy`` — the shard's vectors, ``numpy.save`` format, float16 ``[rows, dim]``
  (queries: ``queries-000000.npy``, float32, so query vectors and thus scores are exact);
* ``corpus-000012.json`` — its done marker, written after the vectors: ``format``, ``digest`` (the
  content digest: SHA-256 over the format, the model fingerprint, the text template with the
  instruction, and every rendered input text), ``rows``, ``dim``, ``dtype``, ``sha256`` of the
  ``.npy`` file, and who wrote it (``rank``, ``host``, ``job``, ``written_at``);
* ``topk/corpus-000012.npz`` (``scores`` float32 ``[queries, k]``, ``rows`` int32 local row numbers)
  with ``topk/corpus-000012.json`` (``corpus_digest``, ``queries_digest``, ``k``, ``sha256``);
* ``job.json`` (the current job's id, checked by every rank: the run directory must be on a
  filesystem all machines share) and ``progress/rank-<r>.json`` (each rank's counters).

Every file is written to a temp file and renamed; the marker comes last. On a resumed job a shard
is reused when its marker names the same content digest and the file's SHA-256 matches; a shard
without a marker (killed while writing), with another digest (other texts or model) or with a
checksum mismatch (corrupt) is encoded again, with one log line saying which. Only the rank that
owns a shard writes its names, and only under rank 0's writer lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import WorkbenchError, first_line
from workbench.run import Folder, atomic_write_bytes, now
from workbench.systems import MINILM

if TYPE_CHECKING:
    from collections.abc import Iterator

    from workbench.eval.encoders import WorkbenchEncoder
    from workbench.eval.targets import Target

log = logging.getLogger(__name__)

FORMAT = "workbench-shard/1"
TARGET_SHARDS = 64  # a corpus is cut into about this many shards ...
MIN_SHARD_ROWS = 256  # ... of at least this many rows (small corpora: fewer shards) ...
MAX_SHARD_ROWS = 100_000  # ... and at most this many (7B on one H100: ~12 min of work per shard)
ENCODE_SLICE = 2048  # texts per encoder call inside a shard: the progress granularity
TIMEOUT_ENV = "WORKBENCH_DIST_TIMEOUT_S"  # collectives wait this long for slow ranks (default 24 h)
PROGRESS_ENV = "WORKBENCH_PROGRESS_EVERY_S"  # seconds between progress lines off a terminal (default 30)
LAUNCH_ENV = "WORKBENCH_LAUNCH_COMMAND"  # the user's command, set by --launcher torchrun (the resume hint)


def shard_rows(n: int, override: int | None = None) -> int:
    """Rows per shard for ``n`` texts: about :data:`TARGET_SHARDS` shards, clamped to
    [:data:`MIN_SHARD_ROWS`, :data:`MAX_SHARD_ROWS`]. Depends on ``n`` only, never on the number of
    ranks, so a job resumed with more or fewer GPUs reuses every finished shard."""
    if override:
        return max(1, int(override))
    return min(MAX_SHARD_ROWS, max(MIN_SHARD_ROWS, math.ceil(n / TARGET_SHARDS)))


@dataclass(frozen=True)
class Shard:
    side: str  # "corpus" | "queries"
    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.side}-{self.index:06d}"

    @property
    def rows(self) -> int:
        return self.stop - self.start


def plan_shards(n: int, side: str, rows: int) -> list[Shard]:
    return [Shard(side, i, start, min(start + rows, n)) for i, start in enumerate(range(0, n, rows))]


def owned(shards: list[Shard], rank: int, world: int) -> list[Shard]:
    """The shards rank ``rank`` of ``world`` encodes: every ``world``-th one (disjoint, deterministic)."""
    return [s for s in shards if s.index % world == rank]


def content_digest(fingerprint: str, template: str, texts: list[str]) -> str:
    """SHA-256 over what decides a shard's vectors: the model fingerprint, the text template (with
    the instruction) and every text, length-prefixed."""
    digest = hashlib.sha256(f"{FORMAT}\n{fingerprint}\n".encode())
    for part in (template, *texts):
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_array_file(path: Path, write: Any) -> str:
    """``write(handle)`` into a temp file beside ``path``, fsync, rename; returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        sha = _sha256(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise WorkbenchError(f"cannot write shard ({err.strerror})", where=str(path),
                             fix="free disk space or check permissions; finished shards are kept") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sha


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class ShardStore:
    """The shard files of one (model, task, language, split) folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def vectors_path(self, shard: Shard) -> Path:
        return self.folder / f"{shard.name}.npy"

    def marker_path(self, shard: Shard) -> Path:
        return self.folder / f"{shard.name}.json"

    def topk_path(self, shard: Shard) -> Path:
        return self.folder / "topk" / f"{shard.name}.npz"

    def topk_marker_path(self, shard: Shard) -> Path:
        return self.folder / "topk" / f"{shard.name}.json"

    def check_vectors(self, shard: Shard, digest: str) -> str | None:
        """None when the shard's vectors are finished and intact for ``digest``, else why not."""
        marker = _read_marker(self.marker_path(shard))
        path = self.vectors_path(shard)
        if marker is None:
            return "unfinished (vectors without a done marker)" if path.exists() else "not encoded yet"
        if marker.get("format") != FORMAT or marker.get("digest") != digest:
            return "stale (written for other texts, template or model)"
        if not path.is_file() or _sha256(path) != marker.get("sha256"):
            return "corrupt (checksum mismatch)"
        return None

    def write_vectors(self, shard: Shard, vectors: np.ndarray, digest: str, dtype: str, **who: Any) -> None:
        self.marker_path(shard).unlink(missing_ok=True)  # the old marker must not vouch for new bytes
        array = np.ascontiguousarray(vectors, dtype=dtype)
        sha = _write_array_file(self.vectors_path(shard), lambda handle: np.save(handle, array))
        marker = {"format": FORMAT, "digest": digest, "rows": int(array.shape[0]), "dim": int(array.shape[1]),
                  "dtype": dtype, "sha256": sha, "written_at": now(), **who}
        atomic_write_bytes(self.marker_path(shard), json.dumps(marker, indent=1).encode())

    def read_vectors(self, shard: Shard) -> np.ndarray:
        return np.load(self.vectors_path(shard), allow_pickle=False)

    def check_topk(self, shard: Shard, corpus_digest: str, queries_digest: str, k: int) -> bool:
        marker = _read_marker(self.topk_marker_path(shard))
        path = self.topk_path(shard)
        return (marker is not None and marker.get("format") == FORMAT and marker.get("corpus_digest") == corpus_digest
                and marker.get("queries_digest") == queries_digest and marker.get("k") == k
                and path.is_file() and _sha256(path) == marker.get("sha256"))

    def write_topk(self, shard: Shard, scores: np.ndarray, rows: np.ndarray, corpus_digest: str,
                   queries_digest: str, k: int, **who: Any) -> None:
        self.topk_marker_path(shard).unlink(missing_ok=True)
        sha = _write_array_file(self.topk_path(shard), lambda handle: np.savez(
            handle, scores=scores.astype(np.float32), rows=rows.astype(np.int32)))
        marker = {"format": FORMAT, "corpus_digest": corpus_digest, "queries_digest": queries_digest, "k": k,
                  "sha256": sha, "written_at": now(), **who}
        atomic_write_bytes(self.topk_marker_path(shard), json.dumps(marker, indent=1).encode())

    def read_topk(self, shard: Shard) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.topk_path(shard), allow_pickle=False) as data:
            return data["scores"], data["rows"]


# -- the process group ---------------------------------------------------------------------------
@dataclass
class DistContext:
    """This process's place in the job: rank, world, device, and the leader's job bookkeeping."""

    rank: int
    world: int
    local_rank: int
    device: str
    shard_rows: int | None = None
    failed: str | None = None  # set by the leader when the stage failed: the followers are told
    stopped: bool = False  # a follower received the leader's stop message
    broken: bool = False  # a job failed on some rank (maybe dead): no goodbye protocol, torchrun stops the rest
    jobs: list[dict[str, Any]] = field(default_factory=list)  # the leader's per-job summaries

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def who(self) -> str:
        return f"rank {self.rank}/{self.world} ({socket.gethostname()} pid {os.getpid()})"

    # collectives: small Python objects over gloo (CPU), whatever the default backend is
    def broadcast(self, message: Any = None) -> Any:
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0, group=_CPU_GROUP)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value, group=_CPU_GROUP)
        return out


ACTIVE: DistContext | None = None
_CPU_GROUP: Any = None


def launched() -> bool:
    """True under torchrun (or any launcher that sets the rendezvous variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def resume_command() -> str:
    """The command that resumes this job: the user's own (``--launcher torchrun``), else torchrun's."""
    if os.environ.get(LAUNCH_ENV):
        return os.environ[LAUNCH_ENV]
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1") or 1)
    per_node = os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))
    head = f"torchrun --nnodes {nodes} --nproc_per_node {per_node}" if nodes > 1 else f"torchrun --nproc_per_node {per_node}"
    tail = " (on every machine, with the same rendezvous options)" if nodes > 1 else ""
    return f"{head} -m workbench.cli {shlex.join(sys.argv[1:])}{tail}"


@contextmanager
def session(shard_rows_override: int | None = None) -> Iterator[DistContext | None]:
    """Join the process group when launched by torchrun (NCCL for GPUs, gloo for CPU and for this
    module's small control messages); yields None for a plain single process. On leaving, the
    leader tells the followers to stop (and whether the stage failed)."""
    global ACTIVE, _CPU_GROUP
    if not launched():
        yield None
        return
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 24 * 3600)))
    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timeout)
    _CPU_GROUP = dist.new_group(backend="gloo", timeout=timeout) if cuda else dist.group.WORLD
    context = DistContext(dist.get_rank(), dist.get_world_size(), local_rank,
                          f"cuda:{local_rank}" if cuda else "cpu", shard_rows=shard_rows_override)
    ACTIVE = context
    try:
        yield context
    except BaseException as err:
        context.failed = context.failed or first_line(err) or type(err).__name__
        raise
    finally:
        try:
            if context.leader and not context.broken:
                context.broadcast({"kind": "stop", "failed": context.failed})
            if (context.leader or context.stopped) and not context.broken:
                # the leader waits until every follower has its stop: tearing down the group while
                # a message is still in flight aborts the process
                dist.barrier(group=_CPU_GROUP)
        finally:
            ACTIVE = None
            try:
                dist.destroy_process_group()
            except Exception:  # a peer already gone: nothing left to release
                pass


# -- the hook the eval stage calls -----------------------------------------------------------------
def distribute(systems: list[tuple[str, str, Any]], section: Any, target: Target, run: Any) -> list[tuple[str, str, Any]]:
    """Under torchrun, hand each embedding model of a retrieval target to mteb as a
    :class:`ShardedSearch` (every rank encodes its shards); otherwise ``systems`` unchanged.
    BM25 and bitext mining run on rank 0 alone."""
    from workbench.eval.encoders import WorkbenchEncoder

    context = ACTIVE
    if context is None or target.kind != "retrieval":
        return systems
    total_docs = sum(int(c.get("docs", 0)) for c in target.counts.values())
    out = []
    for name, label, model in systems:
        if isinstance(model, WorkbenchEncoder):
            if context.leader:  # refuse before any work when the fp16 shards cannot fit the disk
                from workbench.eval.estimate import check_disk

                check_disk(run.root, total_docs * model.backend.dim * 2, what=f"{name}'s fp16 shards of {target.task_name}")
            model = ShardedSearch(model, context, run.stage_dir(Folder.EVAL) / "embeddings",
                                  announce={"section": section.model_dump(mode="json"), "system": name},
                                  total_docs=total_docs)
        out.append((name, label, model))
    return out


# -- the search model ------------------------------------------------------------------------------
class ShardedSearch:
    """mteb ``SearchProtocol`` over a :class:`WorkbenchEncoder`: this rank's shards, then (on the
    leader) the merge of every shard's top-k. See the module docstring."""

    def __init__(self, encoder: WorkbenchEncoder, context: DistContext, cache_root: Path, *,
                 announce: dict[str, Any] | None = None, total_docs: int = 0):
        self.encoder = encoder
        encoder.cache_root = None  # the shards are this search's cache (fp16, resumable per shard)
        encoder.show_progress = False  # rank 0 shows the whole job's progress instead
        self.context = context
        self.cache_root = Path(cache_root)
        self.announce = announce
        self.mteb_model_meta = encoder.mteb_model_meta
        self.total_docs = total_docs  # every language's passages in this call (for the job-wide ETA)
        self.docs_finished = 0  # passages of languages already finished in this call
        self._corpus: Any = None
        self.job_id: str | None = None  # the leader makes one per (task, language, split); followers are told it

    def index(self, corpus: Any, *, task_metadata: Any, hf_split: str, hf_subset: str, **kwargs: Any) -> None:
        self._corpus = corpus

    def _store(self, task_metadata: Any, subset: str, split: str) -> ShardStore:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{subset}-{split}")
        return ShardStore(self.cache_root / self.encoder.fingerprint / "shards" / task_metadata.name / safe)

    def search(self, queries: Any, *, task_metadata: Any, hf_split: str, hf_subset: str, top_k: int,
               top_ranked: Any = None, **kwargs: Any) -> dict[str, dict[str, float]]:
        if top_ranked is not None:
            raise WorkbenchError(f"{task_metadata.name} reranks given candidates; sharded evaluation searches a whole corpus",
                                 where="--launcher", fix="evaluate this task in one process")
        if self.context.leader and self.announce is not None:
            # a new job id per (task, language, split): every rank checks it sees the leader's job file
            self.job_id = uuid.uuid4().hex[:12]
            store = self._store(task_metadata, hf_subset, hf_split)
            atomic_write_bytes(store.folder / "job.json", json.dumps({"job": self.job_id, "started_at": now()}).encode())
            self.context.broadcast({"kind": "job", **self.announce, "subset": hf_subset, "split": hf_split,
                                    "job": self.job_id, "fingerprint": self.encoder.fingerprint})
        job = _Job(self, queries, task_metadata=task_metadata, split=hf_split, subset=hf_subset, top_k=top_k,
                   job_id=self.job_id)
        try:
            return job.run()
        except KeyboardInterrupt:
            self.context.broken = True
            raise WorkbenchError(job._stopped_line("interrupted")) from None
        except WorkbenchError:
            self.context.broken = True  # the ranks are no longer in step: leave the rest to torchrun
            raise
        except Exception as err:  # e.g. a collective whose peer died: still one line naming rank and shard
            self.context.broken = True
            raise WorkbenchError(job._failure(err)) from None
        finally:
            self._corpus = None
            self.docs_finished += job.corpus_rows


class _Job:
    """One (task, language, split) on one rank: queries, own corpus shards, then the merge on rank 0."""

    def __init__(self, search: ShardedSearch, queries: Any, *, task_metadata: Any, split: str, subset: str,
                 top_k: int, job_id: str | None):
        from mteb.types import PromptType

        self.search = search
        self.encoder = search.encoder
        self.context = search.context
        self.metadata = task_metadata
        self.split, self.subset = split, subset
        self.queries = queries
        self.corpus = search._corpus
        self.store = search._store(task_metadata, subset, split)
        self.job_id = job_id
        self.corpus_rows = len(self.corpus)
        self.k = max(1, min(top_k, self.corpus_rows))
        self.PromptType = PromptType
        self.current: str = "start"  # what this rank is doing (named in its failure line)
        self.label = f"{task_metadata.name} {subset} {split}"

    # -- texts exactly as mteb builds them --------------------------------------------------------
    def _texts(self, dataset: Any, prompt_type: Any) -> list[str]:
        import datasets
        from mteb._create_dataloaders import create_dataloader

        shown = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # one "Standardizing" bar per shard would bury the progress line
        try:
            loader = create_dataloader(dataset, task_metadata=self.metadata, prompt_type=prompt_type, batch_size=32)
            return [str(t) for t in loader.dataset["text"]]
        finally:
            if shown:
                datasets.enable_progress_bars()

    def _who(self) -> dict[str, Any]:
        return {"rank": self.context.rank, "host": socket.gethostname(), "job": self.job_id}

    def run(self) -> dict[str, dict[str, float]]:
        context = self.context
        ready = self._ready()
        statuses = context.gather(ready)
        self._raise_for(statuses, "preparing")
        try:
            qd, query_status = self._queries(), None
        except Exception as err:
            qd, query_status = None, self._failure(err)
        self._raise_for(context.gather(query_status), "encoding the queries")
        query_vectors, queries_digest = self._load_queries(qd)
        progress = _Progress(self) if context.leader else None
        try:
            outcome = self._corpus_shards(query_vectors, queries_digest, progress)
        except Exception as err:
            outcome = {"failed": self._failure(err)}
        except BaseException:
            if progress:
                progress.stop(final=False)
            raise
        outcomes = context.gather(outcome)
        if progress:
            progress.stop()
        self._raise_for([o.get("failed") for o in outcomes], "encoding the corpus")
        start = time.perf_counter()
        shards = plan_shards(self.corpus_rows, "corpus", shard_rows(self.corpus_rows, context.shard_rows))
        mine = shards if context.leader else owned(shards, context.rank, context.world)
        results = self._merge(mine)
        if context.leader:
            merge_s = time.perf_counter() - start
            summary = {
                "task": self.metadata.name, "language": self.subset, "split": self.split, "world": context.world,
                "corpus_shards": len(shards), "encoded": sum(o["encoded"] for o in outcomes),
                "reused": sum(o["reused"] for o in outcomes), "searched_from_vectors": sum(o["researched"] for o in outcomes),
                "redone": sorted(n for o in outcomes for n in o["redone"]),
                "passages_encoded": sum(o["passages"] for o in outcomes),
                "encode_seconds_max": round(max(o["seconds"] for o in outcomes), 3),
                "merge_seconds": round(merge_s, 3), "peak_rss_mib": [o["peak_rss_mib"] for o in outcomes],
            }
            context.jobs.append(summary)
            atomic_write_bytes(self.store.folder / "summary.json", json.dumps(summary, indent=1).encode())
            redone = f", {len(summary['redone'])} of them redone: {' '.join(summary['redone'])}" if summary["redone"] else ""
            sys.stderr.write(f"sharded {self.label}: {context.world} rank(s), {len(shards)} corpus shards ({summary['encoded']} "
                             f"encoded{redone}; {summary['reused']} reused; {summary['searched_from_vectors']} searched "
                             f"from stored vectors), merge {merge_s:.2f} s\n")
        return results

    # -- steps -----------------------------------------------------------------------------------
    def _ready(self) -> str | None:
        """Every rank must see the job file the leader wrote (a shared run directory) and the same data."""
        job_file = self.store.folder / "job.json"
        seen = (_read_marker(job_file) or {}).get("job")
        if self.job_id is not None and seen != self.job_id:
            return (f"{self.context.who()} cannot see {job_file} as rank 0 wrote it: the run directory must be on a "
                    "filesystem every machine mounts")
        return None

    def _raise_for(self, statuses: list[Any], step: str) -> None:
        failed = [(r, s) for r, s in enumerate(statuses) if s]
        if not failed:
            return
        mine = statuses[self.context.rank]
        if mine:
            raise WorkbenchError(mine)
        others = ", ".join(f"rank {r}" for r, _ in failed)
        raise WorkbenchError(f"{self.context.who()}: stopped while {step} {self.label}: {others} failed (see its line); "
                             f"finished shards are kept; resume: {resume_command()}")

    def _failure(self, err: BaseException) -> str:
        reason = err.line() if isinstance(err, WorkbenchError) else f"{type(err).__name__}: {first_line(err, 200)}"
        return (f"{self.context.who()} failed at {self.current} of {self.label} ({reason}); finished shards are kept; "
                f"resume: {resume_command()}")

    def _stopped_line(self, why: str) -> str:
        return (f"{self.context.who()} {why} at {self.current} of {self.label}; finished shards are kept; "
                f"resume: {resume_command()}")

    def _queries(self) -> list[tuple[Shard, str]]:
        """Encode this rank's query shards (float32); returns every query shard's digest."""
        context = self.context
        texts = self._texts(self.queries, self.PromptType.query)
        instruction, as_query = self.encoder.formatting(self.metadata, self.PromptType.query)
        template = self.encoder.template_key(instruction, as_query, self.metadata.name)
        self.query_format = (instruction, as_query)
        shards = plan_shards(len(texts), "queries", shard_rows(len(texts), context.shard_rows))
        digests = []
        for shard in shards:
            part = texts[shard.start:shard.stop]
            digest = content_digest(self.encoder.fingerprint, template, part)
            digests.append((shard, digest))
            if shard.index % context.world != context.rank:
                continue
            self.current = f"query shard {shard.name}"
            why = self.store.check_vectors(shard, digest)
            if why is None:
                continue
            if why != "not encoded yet":
                log.warning("%s %s: %s; encoding it again", self.label, shard.name, why)
            vectors = self.encoder.encode_texts(part, instruction=instruction, as_query=as_query,
                                                task=self.metadata.name, desc=shard.name)
            self.store.write_vectors(shard, vectors, digest, "float32", **self._who())
        return digests

    def _load_queries(self, digests: list[tuple[Shard, str]] | None) -> tuple[np.ndarray, str]:
        assert digests is not None
        parts, combined = [], hashlib.sha256()
        for shard, digest in digests:
            why = self.store.check_vectors(shard, digest)
            if why is not None:
                raise WorkbenchError(f"{self.context.who()}: query shard {shard.name} of {self.label} is {why} after its "
                                     "rank wrote it", where=str(self.store.vectors_path(shard)),
                                     fix="the run directory must be on a filesystem every machine mounts")
            parts.append(self.store.read_vectors(shard).astype(np.float32))
            combined.update(digest.encode())
        dim = self.encoder.backend.dim
        return (np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)), combined.hexdigest()

    def _corpus_shards(self, query_vectors: np.ndarray, queries_digest: str, progress: _Progress | None) -> dict[str, Any]:
        context = self.context
        rows = shard_rows(self.corpus_rows, context.shard_rows)
        shards = plan_shards(self.corpus_rows, "corpus", rows)
        mine = owned(shards, context.rank, context.world)
        instruction, as_query = self.encoder.formatting(self.metadata, self.PromptType.document)
        template = self.encoder.template_key(instruction, as_query, self.metadata.name)
        counters = {"encoded": 0, "reused": 0, "researched": 0, "passages": 0, "redone": [], "seconds": 0.0}
        tracker = _RankProgress(self, todo=sum(s.rows for s in mine))
        started = time.perf_counter()
        for shard in mine:
            self.current = f"corpus shard {shard.name} (rows {shard.start}-{shard.stop - 1})"
            texts = self._texts(self.corpus.select(range(shard.start, shard.stop)), self.PromptType.document)
            digest = content_digest(self.encoder.fingerprint, template, texts)
            why = self.store.check_vectors(shard, digest)
            if why is None:
                if self.store.check_topk(shard, digest, queries_digest, min(self.k, shard.rows)):
                    counters["reused"] += 1
                    tracker.skip(shard.rows)
                    continue
                vectors = self.store.read_vectors(shard).astype(np.float32)  # other queries: search the stored fp16
                log.info("%s %s: vectors reused, searched again for these queries", self.label, shard.name)
                counters["researched"] += 1
                tracker.skip(shard.rows)
            else:
                if why != "not encoded yet":
                    log.warning("%s %s: %s; encoding it again", self.label, shard.name, why)
                    counters["redone"].append(shard.name)
                vectors = self._encode(texts, instruction, as_query, tracker)
                self.store.write_vectors(shard, vectors, digest, "float16", **self._who())
                counters["encoded"] += 1
                counters["passages"] += shard.rows
            scores, local = self._topk(query_vectors, vectors, min(self.k, shard.rows))
            self.store.write_topk(shard, scores, local, digest, queries_digest, min(self.k, shard.rows), **self._who())
            tracker.write()
        counters["seconds"] = time.perf_counter() - started
        self.current = "the end of its shards (waiting for the other ranks)"
        counters["peak_rss_mib"] = _peak_rss_mib()
        tracker.write(final=True)
        return counters

    def _encode(self, texts: list[str], instruction: str, as_query: bool, tracker: _RankProgress) -> np.ndarray:
        """The shard's vectors in input order, encoded longest first in slices (progress in between)."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.encoder.backend.dim), dtype=np.float32)
        for start in range(0, len(order), ENCODE_SLICE):
            positions = order[start:start + ENCODE_SLICE]
            out[positions] = self.encoder.encode_texts([texts[i] for i in positions], instruction=instruction,
                                                       as_query=as_query, task=self.metadata.name)
            tracker.encoded(len(positions))
        return out

    def _topk(self, query_vectors: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of one shard for every query, scored by the model's similarity as mteb's search
        scores it (fp32 on CPU), so the merged ranking is the one a single process finds."""
        import torch

        if len(query_vectors) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int32)
        scores = torch.as_tensor(self.encoder.similarity(query_vectors, vectors))
        values, indices = torch.topk(scores, k, dim=1, largest=True)
        return values.cpu().numpy().astype(np.float32), indices.cpu().numpy().astype(np.int32)

    def _merge(self, shards: list[Shard]) -> dict[str, dict[str, float]]:
        """The top ``k`` per query over ``shards``' top-k files (rank 0: all shards; others: their own)."""
        qids = [str(q) for q in self.queries["id"]]
        best_scores = np.full((len(qids), 0), -np.inf, dtype=np.float32)
        best_rows = np.zeros((len(qids), 0), dtype=np.int64)
        for shard in shards:
            scores, local = self.store.read_topk(shard)
            best_scores = np.concatenate([best_scores, scores], axis=1)
            best_rows = np.concatenate([best_rows, local.astype(np.int64) + shard.start], axis=1)
            if best_scores.shape[1] > self.k:
                keep = np.argpartition(-best_scores, self.k - 1, axis=1)[:, : self.k]
                best_scores = np.take_along_axis(best_scores, keep, axis=1)
                best_rows = np.take_along_axis(best_rows, keep, axis=1)
        wanted = np.unique(best_rows)
        ids = dict(zip(wanted.tolist(), (str(i) for i in self.corpus.select(wanted.tolist())["id"]), strict=True))
        results: dict[str, dict[str, float]] = {}
        for q, qid in enumerate(qids):
            results[qid] = {ids[int(r)]: float(s) for r, s in zip(best_rows[q], best_scores[q], strict=True)}
        return results


# -- progress ---------------------------------------------------------------------------------------
def _peak_rss_mib() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class _RankProgress:
    """This rank's counters in ``progress/rank-<r>.json`` (read by rank 0's progress line)."""

    def __init__(self, job: _Job, todo: int):
        self.path = job.store.folder / "progress" / f"rank-{job.context.rank}.json"
        self.state = {"rank": job.context.rank, "pid": os.getpid(), "host": socket.gethostname(), "job": job.job_id,
                      "rows": todo, "skipped": 0, "encoded": 0, "done": False}
        self.job = job
        self._last = 0.0
        self.write()

    def skip(self, rows: int) -> None:
        self.state["skipped"] += rows

    def encoded(self, rows: int) -> None:
        self.state["encoded"] += rows
        if time.monotonic() - self._last > 1.0:
            self.write()

    def write(self, final: bool = False) -> None:
        self.state.update(done=final, shard=self.job.current, at=time.time())
        self._last = time.monotonic()
        try:
            atomic_write_bytes(self.path, json.dumps(self.state).encode())
        except WorkbenchError:  # progress is best effort; the shards themselves are what counts
            pass


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"


class _Progress:
    """Rank 0's view of the whole job: passages encoded by all ranks, passages/s, ETA; a line that
    updates in place on a terminal, plain lines every ``WORKBENCH_PROGRESS_EVERY_S`` seconds otherwise."""

    def __init__(self, job: _Job):
        self.job = job
        self.folder = job.store.folder / "progress"
        self.tty = sys.stderr.isatty()
        self.every = 1.0 if self.tty else float(os.environ.get(PROGRESS_ENV, 30))
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shard-progress", daemon=True)
        self._thread.start()

    def line(self) -> str | None:
        encoded = skipped = 0
        for file in self.folder.glob("rank-*.json"):
            state = _read_marker(file) or {}
            if state.get("job") != self.job.job_id:
                continue
            encoded += int(state.get("encoded", 0))
            skipped += int(state.get("skipped", 0))
        search = self.job.search
        total = max(search.total_docs, search.docs_finished + self.job.corpus_rows)
        done = search.docs_finished + skipped + encoded
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = encoded / elapsed
        eta = "0 s" if done >= total else _format_duration((total - done) / rate) if rate > 0 else "?"
        ranks = f"{self.job.context.world} rank{'s' if self.job.context.world > 1 else ''}"
        return (f"{self.job.label}: {done:,}/{total:,} passages ({skipped:,} reused), {rate:,.1f} passages/s "
                f"on {ranks}, ETA {eta}")

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            line = self.line()
            if line:
                if self.tty:
                    sys.stderr.write("\r" + line[:200].ljust(120))
                else:
                    sys.stderr.write(line + "\n")
                sys.stderr.flush()

    def stop(self, final: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        line = self.line() if final else None
        if line:
            sys.stderr.write(("\r" if self.tty else "") + line + "\n")
            sys.stderr.flush()


# -- ranks > 0 -----------------------------------------------------------------------------------------
def follow(context: DistContext, run_dir: Path) -> None:
    """A follower's life: do each job rank 0 announces until it says stop (or fails)."""
    import mteb  # noqa: F401  (imported before the first job, so a job does not start with an import)

    from workbench.config import EvalSection
    from workbench.encoder import minilm_path
    from workbench.eval.encoders import WorkbenchEncoder
    from workbench.eval.passkey import encoder_overrides
    from workbench.eval.targets import build_target
    from workbench.languages import load_registry

    registry = load_registry()
    cache_root = Path(run_dir) / Folder.EVAL / "embeddings"
    encoders: dict[tuple[Any, ...], WorkbenchEncoder] = {}
    targets: dict[str, Any] = {}
    while True:
        try:
            message = context.broadcast()
        except RuntimeError as err:  # rank 0 is gone (torchrun stops this rank too)
            raise WorkbenchError(f"{context.who()}: lost rank 0 ({first_line(err, 160)}); finished shards are kept; "
                                 f"resume: {resume_command()}") from None
        if message.get("kind") == "stop":
            context.stopped = True
            if message.get("failed"):
                raise WorkbenchError(f"{context.who()}: stopped because rank 0 failed ({message['failed']}); "
                                     f"finished shards are kept; resume: {resume_command()}")
            return
        try:
            section = EvalSection.model_validate(message["section"])
            key = json.dumps(message["section"], sort_keys=True)
            if key not in targets:
                targets.clear()  # one target at a time: a corpus can be large
                targets[key] = build_target(section, registry)
            target = targets[key]
            path = minilm_path() if section.model == MINILM else Path(section.model).expanduser()
            # the same encoder as rank 0's (eval/stage.py _build_systems): another folder's contract included
            contract_from = Path(section.contract_from).expanduser() if section.contract_from else None
            encoder_key = (str(path), section.pooling, section.batch_size, str(contract_from))
            if encoder_key not in encoders:
                encoders.clear()
                encoders[encoder_key] = WorkbenchEncoder(path, cache_root=None, pooling=section.pooling,
                                                         batch_size=section.batch_size, device=context.device,
                                                         show_progress=False, name=message["system"],
                                                         contract_from=contract_from, **encoder_overrides(section))
            encoder = encoders[encoder_key]
            if encoder.fingerprint != message["fingerprint"]:
                raise WorkbenchError(f"the model files differ from rank 0's (fingerprint {encoder.fingerprint}, "
                                     f"rank 0 {message['fingerprint']})", where=str(path),
                                     fix="every machine needs the same model folder")
            search = ShardedSearch(encoder, context, cache_root)
            search.job_id = message["job"]
        except Exception as err:  # reported to every rank (the leader waits for it), then raised here
            reason = err.line() if isinstance(err, WorkbenchError) else f"{type(err).__name__}: {first_line(err, 200)}"
            line = (f"{context.who()} failed preparing {message.get('subset')} {message.get('split')} ({reason}); "
                    f"resume: {resume_command()}")
            context.gather(line)
            context.broken = True
            raise WorkbenchError(line) from None
        target.task.evaluate(search, message["split"], subsets_to_run=[message["subset"]],
                             encode_kwargs={"batch_size": section.batch_size, "show_progress_bar": False})


__all__ = ["ACTIVE", "DistContext", "FORMAT", "Shard", "ShardStore", "ShardedSearch", "content_digest", "distribute",
           "follow", "launched", "owned", "plan_shards", "resume_command", "session", "shard_rows"]


# -- `workbench eval RUN --launcher torchrun --gpus N` ----------------------------------------------
LAUNCH_OPTIONS = ("--launcher", "--gpus")


def torchrun_argv(argv: list[str], processes: int) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m workbench.cli eval ...``:
    the user's eval arguments without ``--launcher``/``--gpus``."""
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCH_OPTIONS:
            skip = "=" not in arg
            continue
        rest.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "workbench.cli", *rest]


def launch_torchrun(processes: int) -> int:
    """Run this eval command under torchrun with ``processes`` ranks (one per GPU; on a CPU-only
    machine, CPU processes with the cores split between them); returns torchrun's exit status."""
    import subprocess

    import torch

    if processes < 1:
        raise WorkbenchError(f"--gpus {processes}", where="--gpus", fix="give at least 1")
    if torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise WorkbenchError(f"{processes} GPUs asked, {torch.cuda.device_count()} visible", where="--gpus",
                             fix=f"use --gpus {torch.cuda.device_count()} or fewer (CUDA_VISIBLE_DEVICES)")
    argv = sys.argv[1:]
    command = torchrun_argv(argv, processes)
    env = dict(os.environ)
    env[LAUNCH_ENV] = shlex.join(["workbench", *argv])
    if not torch.cuda.is_available():
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    try:
        code = subprocess.call(command, env=env)
    except KeyboardInterrupt:
        code = 130
    if code != 0:
        sys.stderr.write(f"error: the sharded evaluation stopped (torchrun exit status {code}; each rank's line above "
                         f"says why); finished shards are kept: resume with {env[LAUNCH_ENV]}\n")
    return code
