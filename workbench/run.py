"""The run directory: the only state a run has.

``runs/<name>/`` holds ``run.toml`` (the resolved config), ``manifest.json`` (what each stage
produced), one Parquet table per stage and language (``plan/sw.parquet``, ``generated/sw.parquet``…),
the request cache ``cache.sqlite`` and stage folders such as ``audit/``, ``train/``, ``eval/``.

Tables are written atomically (temp file + rename) and checked against their declared schema
(:mod:`workbench.tables`) on write and on read. A stage is complete only when its manifest entry
says so; that entry is written after the stage's tables.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import io
import json
import os
import platform
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl

from workbench import __version__
from workbench.errors import TableError, WorkbenchError, first_line
from workbench.locks import RunLock
from workbench.tables import Schema, conform

LAYOUT_VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "run.toml"


class Folder(StrEnum):
    """The run directory's folders, named once; a member is the plain name (``Folder.ACCEPTED ==
    "accepted"``), so it goes wherever a folder name does (:meth:`Run.stage_dir`,
    :meth:`Run.write_table`, ...)."""

    PLAN = "plan"  # plan: <lang>.parquet, the slots
    TASKS = "tasks"  # generate: <lang>.parquet, the brainstormed tasks
    GENERATED = "generated"  # generate: <lang>.parquet, slots with their example fields
    ACCEPTED = "accepted"  # filter: <lang>.parquet
    REJECTED = "rejected"  # filter: <lang>.parquet, with reasons
    AUDIT = "audit"  # audit: summary.parquet, audit.json, index.html, rejects_for_review.jsonl
    TRAIN = "train"  # train: records, log, adapter/, model/
    EVAL = "eval"  # eval: results, per_query, embeddings/, mteb JSON
    REPORT = "report"  # report: index.html, summary.md, the tables behind them
    LOGS = "logs"  # the runner: <stage>.log
    EXPORT = "export"  # workbench export: dataset/


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class StageResult:
    """What one stage did: its status, rows written per output, free-form stats.

    ``current`` is set by the runner when the stage was current and nothing ran (the result is the
    one recorded in the manifest).
    """

    stage: str
    outputs: dict[str, int] = field(default_factory=dict)  # path relative to the run -> rows
    stats: dict[str, Any] = field(default_factory=dict)
    status: str = "complete"  # complete | partial (work left; resumable) | waiting (batches open)
    current: bool = False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs are ordinary files (HTML reports, tables) others may read.
FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + rename: the old file stays whole until the rename.

    A failed write (disk full, quota, read-only disk) removes the temp file and raises one
    :class:`WorkbenchError` naming the file; the previous version of ``path`` is untouched.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_error(path: Path, err: OSError) -> WorkbenchError:
    """One clear line for a failed write: what the OS said, which file, what to do."""
    reason = err.strerror or type(err).__name__
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free space on that disk or move the run directory, then re-run the same command to resume"
    else:
        fix = "check the directory exists and is writable, then re-run the same command to resume"
    return WorkbenchError(f"cannot write ({reason}); any earlier version of this file is kept",
                          where=str(path), fix=fix)


class Run:
    """A run directory. Create with :meth:`create`, open an existing one with :meth:`open`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.lock = RunLock(self.root)  # writer lock, manifest lock, torchrun followers (workbench.locks)

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path | str) -> "Run":
        run = cls(Path(root))
        run.root.mkdir(parents=True, exist_ok=True)
        if not (run.root / MANIFEST).exists():
            run._write_manifest(
                {
                    "layout_version": LAYOUT_VERSION,
                    "workbench_version": __version__,
                    "created_at": now(),
                    "stages": {},
                }
            )
        else:
            run.check_layout()
        return run

    @classmethod
    def open(cls, root: Path | str) -> "Run":
        run = cls(Path(root))
        if not (run.root / MANIFEST).is_file():
            raise WorkbenchError(
                "not a run directory (no manifest.json)",
                where=str(run.root),
                fix="create it with 'workbench plan' or 'workbench run CONFIG.toml'",
            )
        run.check_layout()
        return run

    def check_layout(self) -> None:
        version = self.manifest().get("layout_version")
        if version != LAYOUT_VERSION:
            raise WorkbenchError(
                f"run directory layout version {version!r}; this workbench reads version {LAYOUT_VERSION}",
                where=str(self.root / MANIFEST),
                fix="start a new run, or use the workbench version that wrote it",
            )

    # -- paths -----------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG

    @property
    def cache_path(self) -> Path:
        return self.root / "cache.sqlite"

    def inside(self, path: Path | str) -> Path:
        """``path`` if it lies inside the run directory, else one line: every path a stage writes
        is built from names (stage, language, system, split) and is checked here first.

        Lexical (``..`` folded, links not followed), so a folder of the run that is a symlink to
        another disk (``eval/embeddings``) stays inside."""
        root = os.path.normpath(os.path.abspath(self.root))
        target = os.path.normpath(os.path.abspath(path))
        if target != root and not target.startswith(root + os.sep):
            raise WorkbenchError("this path lies outside the run directory; nothing is written there",
                                 where=str(path), fix="a name that becomes a file or folder must be one plain name "
                                                      "(no '/', no '..')")
        return Path(path)

    def stage_dir(self, stage: str) -> Path:
        """The folder ``stage`` of the run (a :class:`Folder`)."""
        return self.inside(self.root / stage)

    def relative(self, path: Path) -> str:
        """``path`` relative to the run directory, as the manifest names outputs (``accepted/sw.parquet``)."""
        return Path(path).relative_to(self.root).as_posix()

    def table_path(self, stage: str, language: str) -> Path:
        return self.inside(self.root / stage / f"{language}.parquet")

    def table_languages(self, stage: str) -> list[str]:
        folder = self.stage_dir(stage)
        return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []

    # -- tables ----------------------------------------------------------------------------
    def write_table(self, stage: str, language: str, df: pl.DataFrame, schema: Schema) -> Path:
        path = self.table_path(stage, language)
        table = conform(df, schema, where=str(path))
        # serialise in memory, then write with plain file calls: polars reports a full disk as an
        # opaque "Invalid thrift: transport error", an OSError says ENOSPC
        buffer = io.BytesIO()
        table.write_parquet(buffer, compression="zstd", statistics=True)
        atomic_write_bytes(path, buffer.getvalue())
        return path

    def write_table_chunks(self, stage: str, language: str, chunks: Iterable[pl.DataFrame],
                           schema: Schema) -> tuple[Path, int]:
        """Write one table from chunks of rows (one Parquet row group each): memory holds one
        chunk at a time, whatever the table's size. Atomic like :meth:`write_table` (temp file,
        fsync, rename; a failed write keeps the old file and raises one line). (path, rows)."""
        import pyarrow.parquet as pq

        path = self.table_path(stage, language)
        rows = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as err:
            raise write_error(path, err) from None
        try:
            os.chmod(tmp, FILE_MODE)
            # a plain Python file underneath: a full disk is an OSError with its errno, not an Arrow message
            with os.fdopen(fd, "wb") as handle:
                writer = None
                for chunk in chunks:
                    table = conform(chunk, schema, where=str(path)).to_arrow()
                    if writer is None:
                        writer = pq.ParquetWriter(handle, table.schema, compression="zstd", write_statistics=True)
                    writer.write_table(table)
                    rows += chunk.height
                if writer is None:  # no rows at all: still a table with the declared columns
                    table = conform(pl.DataFrame(schema=schema), schema, where=str(path)).to_arrow()
                    writer = pq.ParquetWriter(handle, table.schema, compression="zstd", write_statistics=True)
                    writer.write_table(table)
                writer.close()
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            raise write_error(path, err) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path, rows

    def read_table(self, stage: str, language: str, schema: Schema) -> pl.DataFrame:
        path = self.table_path(stage, language)
        return read_parquet(path, schema)

    def has_table(self, stage: str, language: str) -> bool:
        return self.table_path(stage, language).is_file()

    # -- manifest --------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WorkbenchError("no manifest.json", where=str(self.root)) from None
        except json.JSONDecodeError as err:
            raise WorkbenchError(
                f"manifest is not valid JSON ({err.msg}, line {err.lineno})",
                where=str(path),
                fix="restore it from a backup or start a new run; tables are untouched",
            ) from None

    def _write_manifest(self, data: dict[str, Any]) -> None:
        atomic_write_bytes(self.root / MANIFEST, json.dumps(data, indent=2, sort_keys=True).encode())

    def stage_entry(self, stage: str) -> dict[str, Any] | None:
        return self.manifest()["stages"].get(stage)

    def record_stage(
        self,
        stage: str,
        *,
        status: str,
        config_hash: str,
        outputs: dict[str, int] | None = None,
        stats: dict[str, Any] | None = None,
        started_at: str | None = None,
        via: str | None = None,
    ) -> None:
        """Write the stage's manifest entry (the runner does, after the stage's tables)."""
        recorded: dict[str, Any] = {}
        for rel, rows in (outputs or {}).items():
            path = self.root / rel
            present = path.is_file()
            recorded[rel] = {"rows": rows, "sha256": file_sha256(path) if present else None,
                             "bytes": path.stat().st_size if present else None}
        with self.lock.manifest():
            manifest = self.manifest()
            manifest["stages"][stage] = {
                "status": status,
                "config_hash": config_hash,
                "started_at": started_at or now(),
                "finished_at": now() if status == "complete" else None,
                "outputs": recorded,
                "stats": stats or {},
                "versions": _versions(),
                **({"via": via} if via else {}),
            }
            self._write_manifest(manifest)


def read_parquet_unchecked(
    path: Path, fix: str = "the file is corrupt or truncated; delete it and re-run the stage that writes it"
) -> pl.DataFrame:
    """Read a Parquet file; a missing or damaged file is one clear error (no schema check)."""
    if not path.is_file():
        raise TableError("table not found", where=str(path), fix="run the stage that writes it first")
    try:
        return pl.read_parquet(path, glob=False)  # a run path may hold [ ] or *, which are not patterns
    except Exception as err:  # polars raises several types for damaged files
        first = first_line(err, 200)
        raise TableError(f"cannot read Parquet ({first})", where=str(path), fix=fix) from None


def read_parquet(path: Path, schema: Schema) -> pl.DataFrame:
    """Read one run table; a missing, corrupt or mis-shaped file is one clear error."""
    return conform(read_parquet_unchecked(path), schema, where=str(path))


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"workbench": __version__, "python": platform.python_version()}
    for package in ("polars", "openai", "torch", "transformers", "mteb"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return versions
