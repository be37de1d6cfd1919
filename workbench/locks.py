"""A run directory's locks, in one place: :class:`RunLock`, which every :class:`~workbench.run.Run`
owns as ``run.lock``.

* **The writer lock** (:meth:`RunLock.writer`): one writing process per run directory. ``flock`` on
  ``.writer.lock``, which also records the holder's pid, so the kernel releases it when the holder
  dies, however it dies: a lock file left by a killed process is simply taken over. A second process
  is refused with one line naming the holder. Re-entrant within one process (``workbench run`` → a
  stage): nested holders share one open file, since a second open of the lock file in this process
  would refuse us.
* **The manifest lock** (:meth:`RunLock.manifest`): ``manifest.json`` is read, changed and written
  back under ``.manifest.lock``, so two writers of stage entries never lose each other's update.
* **torchrun ranks other than 0** (:func:`torchrun_rank`) belong to rank 0's job: rank 0 holds the
  writer lock and records the manifest; the others (``follower``) take no writer lock and record
  nothing.
* **A CLI command** runs inside :func:`command_scope`: a writer lock it takes with
  :meth:`RunLock.hold` (and anything else it enters with :func:`enter_for_command`, e.g. the
  torchrun process group) is released when the command ends, errors included.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, TypeVar

from workbench.errors import WorkbenchError

WRITER_LOCK = ".writer.lock"
MANIFEST_LOCK = ".manifest.lock"
T = TypeVar("T")

# Open CLI commands (innermost last): what they enter is left when they end.
_COMMAND_SCOPES: list[contextlib.ExitStack] = []


def torchrun_rank() -> int:
    """This process's rank under torchrun or the DeepSpeed launcher (``$RANK``); 0 for a plain process."""
    return int(os.environ.get("RANK", "0") or 0)


@contextlib.contextmanager
def command_scope() -> Iterator[None]:
    """Run one CLI command inside this: what it holds (:meth:`RunLock.hold`,
    :func:`enter_for_command`) is released when it ends."""
    stack = contextlib.ExitStack()
    _COMMAND_SCOPES.append(stack)
    try:
        with stack:
            yield
    finally:
        _COMMAND_SCOPES.remove(stack)


def enter_for_command(manager: contextlib.AbstractContextManager[T]) -> T:
    """Enter ``manager`` until the current CLI command (:func:`command_scope`) ends, errors included
    (e.g. the process group of a torchrun rank); outside a command it stays entered for the process."""
    if _COMMAND_SCOPES:
        return _COMMAND_SCOPES[-1].enter_context(manager)
    return manager.__enter__()


class RunLock:
    """The locks of one run directory (see the module docstring)."""

    # Writer locks this process holds, shared by every RunLock of the same directory:
    # run directory (real path) -> [open lock file, depth].
    _held: ClassVar[dict[str, list[int]]] = {}
    _held_guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def follower(self) -> bool:
        """A torchrun rank other than 0: rank 0 holds the writer lock and records the manifest for it."""
        return torchrun_rank() > 0

    # -- the writer lock -----------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self) -> Iterator[None]:
        """Hold the writer lock while the block runs: a second process that tries to write this run
        is refused with one line. Re-entrant within one process; a follower rank takes none."""
        if self.follower:
            yield
            return
        key = os.path.realpath(self.root)
        with self._held_guard:
            if key in self._held:
                self._held[key][1] += 1
            else:
                self._held[key] = [self._take(), 1]
        try:
            yield
        finally:
            with self._held_guard:
                self._held[key][1] -= 1
                if self._held[key][1] == 0:
                    os.close(self._held.pop(key)[0])  # closing the file releases the flock

    def hold(self) -> None:
        """Inside a CLI command (:func:`command_scope`), hold the writer lock until the command ends;
        elsewhere only check that no other process holds it. Refuses with one line naming the holder."""
        if _COMMAND_SCOPES:
            enter_for_command(self.writer())
        else:
            with self.writer():
                pass

    def holder(self) -> int | None:
        """The pid of the live process holding the writer lock (this one included), -1 when the
        holder wrote no pid, None when nobody holds it."""
        try:
            fd = os.open(self.root / WRITER_LOCK, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            if os.path.realpath(self.root) in self._held:
                return os.getpid()
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_pid(fd) or -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _take(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / WRITER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            kill = f" (kill {holder})" if holder else ""
            raise WorkbenchError(
                f"another workbench process ({who}) is writing this run",
                where=str(self.root),
                fix=f"wait for it to finish or stop it{kill}, then re-run this command",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    # -- the manifest lock ---------------------------------------------------------------------
    @contextlib.contextmanager
    def manifest(self) -> Iterator[None]:
        """Hold the manifest lock while the block reads, changes and writes ``manifest.json``."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / MANIFEST_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
