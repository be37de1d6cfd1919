"""Embedding cache in the run directory: ``eval/embeddings/<model fingerprint>/<instruction key>/``.

One entry per (model fingerprint, text hash, instruction). The instruction (the query template
filled with a task's instruction, or "" for documents and plain encoders) picks a folder, the text's
SHA-256 picks the row. Entries are written in shards (``part-<n>.npz`` with ``keys`` and ``vectors``
arrays, float32) with temp file + rename, every ``flush_every`` new vectors, so an interrupted eval
keeps what it encoded and resumes; a re-run or a second task over the same corpus re-encodes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)


def text_key(text: str) -> bytes:
    """The row key of one text: its SHA-256 as 32 hex characters (ASCII bytes)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32].encode("ascii")


def instruction_key(instruction: str) -> str:
    return "plain" if not instruction else "i-" + hashlib.sha256(instruction.encode("utf-8")).hexdigest()[:16]


class EmbeddingCache:
    """Vectors of one model under one instruction, keyed by text hash."""

    def __init__(self, root: Path, fingerprint: str, instruction: str, *, flush_every: int = 1024):
        self.folder = Path(root) / fingerprint / instruction_key(instruction)
        self.instruction = instruction
        self.flush_every = flush_every
        self._vectors: dict[bytes, np.ndarray] = {}
        self._pending: dict[bytes, np.ndarray] = {}
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if not self.folder.is_dir():
            return
        for shard in sorted(self.folder.glob("part-*.npz")):
            try:
                with np.load(shard) as data:
                    keys, vectors = data["keys"], data["vectors"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
                # a damaged shard only costs re-encoding its texts; say so, never drop silently
                log.warning("%s: unreadable cache shard (%s); its texts will be re-encoded", shard, err)
                continue
            for key, vector in zip(keys.tolist(), vectors, strict=True):
                self._vectors[key] = vector
        log.info("embedding cache %s: %d vectors", self.folder, len(self._vectors))

    def __len__(self) -> int:
        self._load()
        return len(self._vectors) + len(self._pending)

    def lookup(self, keys: Sequence[bytes]) -> dict[int, np.ndarray]:
        """Positions in ``keys`` that are cached, with their vectors."""
        self._load()
        found: dict[int, np.ndarray] = {}
        for i, key in enumerate(keys):
            vector = self._vectors.get(key)
            if vector is None:
                vector = self._pending.get(key)
            if vector is not None:
                found[i] = vector
        return found

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        self._load()
        for key, vector in zip(keys, np.asarray(vectors, dtype=np.float32), strict=True):
            self._pending[key] = vector
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write pending vectors as one new shard (atomic)."""
        if not self._pending:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        note = self.folder / "instruction.txt"
        if not note.exists():
            note.write_text(self.instruction, encoding="utf-8")
        keys = np.array(list(self._pending), dtype="S32")
        vectors = np.stack(list(self._pending.values())).astype(np.float32)
        index = len(list(self.folder.glob("part-*.npz")))
        while (self.folder / f"part-{index:05d}.npz").exists():
            index += 1
        target = self.folder / f"part-{index:05d}.npz"
        fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=".npz.tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, keys=keys, vectors=vectors)
            os.replace(tmp, target)
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            raise WorkbenchError(
                f"cannot write embedding cache shard ({err.strerror})",
                where=str(target),
                fix="free disk space or check permissions; vectors already cached are kept",
            ) from None
        self._vectors.update(self._pending)
        self._pending.clear()
