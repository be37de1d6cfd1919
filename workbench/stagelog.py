"""A stage's log: ``logs/<stage>.log`` in the run directory, written while the runner runs the stage.

It receives the workbench's own log records (INFO and up), every Python warning and every log
record of WARNING and up from a library. Library warnings are what a user cannot act on (mteb's
UserWarnings, FutureWarnings about renamed methods, DeepSpeed's "Setting accelerator to CPU"):
they go only to the log, counted by source, and the CLI says the count once
(:func:`logged_note`). The workbench's own warnings are still printed on stderr. Libraries that
print through their own console handler (DeepSpeed on stdout, transformers on stderr) are routed
to the log for the duration of the stage, and every tqdm progress bar (mteb's, ``datasets``',
``transformers``') is off: the CLI shows the stage's own progress.

One file per stage, appended to (a header line per run of the stage); under torchrun, ranks
other than 0 write ``logs/<stage>.rank<N>.log``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.locks import torchrun_rank
from workbench.run import Folder, now

OWN_LOGGER = "workbench"


def _own(name: str) -> bool:
    return name == OWN_LOGGER or name.startswith(OWN_LOGGER + ".")


@dataclass
class StageLog:
    """What one run of a stage logged: the file and the library warnings kept out of the console."""

    path: Path
    relative: str  # the path inside the run directory, as the manifest and the CLI name it
    library_warnings: Counter = field(default_factory=Counter)  # source (category or logger) -> count

    def summary(self) -> dict[str, Any]:
        return {"log": self.relative, "library_warnings": sum(self.library_warnings.values()),
                "by_source": dict(self.library_warnings.most_common())}


class _ToLog(logging.Handler):
    """Writes every record it gets to the stage's file once; counts library records of WARNING and up."""

    def __init__(self, file: logging.Handler, log: StageLog):
        super().__init__(logging.NOTSET)
        self.file = file
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "_stage_logged", False):  # seen by a library logger's handler and again at the root
            return
        record._stage_logged = True
        if not _own(record.name) and record.levelno < logging.WARNING:
            return
        self.file.handle(record)
        if not _own(record.name):
            self.log.library_warnings[record.name.split(".")[0]] += 1


class _OwnWarnings(logging.StreamHandler):
    """The workbench's own warnings on stderr, as they were before the stage log existed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setLevel(logging.WARNING)
        self.addFilter(lambda record: _own(record.name))
        self.setFormatter(logging.Formatter("warning: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)  # the stream of now (tests and the CLI swap sys.stderr)
        super().emit(record)


def _console_handler(handler: logging.Handler) -> bool:
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    return type(handler) is logging.StreamHandler and getattr(handler, "stream", None) in streams


@contextlib.contextmanager
def stage_log(root: Path, stage: str) -> Iterator[StageLog]:
    """Route warnings and log records to ``root/logs/<stage>.log`` while the block runs."""
    rank = torchrun_rank()
    relative = f"{Folder.LOGS}/{stage}.log" if rank == 0 else f"{Folder.LOGS}/{stage}.rank{rank}.log"
    log = StageLog(root / relative, relative)
    log.path.parent.mkdir(parents=True, exist_ok=True)
    file = logging.FileHandler(log.path, mode="a", encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    file.stream.write(f"--- {stage} started {now()} (pid {os.getpid()})\n")
    to_log = _ToLog(file, log)
    own_logger = logging.getLogger(OWN_LOGGER)
    root_logger = logging.getLogger()
    own_console = None if any(_console_handler(h) for h in root_logger.handlers) else _OwnWarnings()
    # libraries with their own console handler (DeepSpeed, transformers): swapped for the log, also
    # for loggers a library creates while the stage runs (DeepSpeed's, at its first import)
    swapped: list[tuple[logging.Logger, logging.Handler]] = []
    original_add = logging.Logger.addHandler

    def add_handler(logger: logging.Logger, handler: logging.Handler) -> None:
        if logger is not root_logger and not _own(logger.name) and _console_handler(handler):
            swapped.append((logger, handler))
            handler = to_log
        original_add(logger, handler)

    for logger in [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]:
        for handler in list(logger.handlers):
            if not _own(logger.name) and _console_handler(handler):
                logger.removeHandler(handler)
                add_handler(logger, handler)

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        record = logging.LogRecord("py.warnings", logging.WARNING, filename, lineno,
                                   warnings.formatwarning(message, category, filename, lineno, line).rstrip(),
                                   None, None)
        to_log.file.handle(record)
        log.library_warnings[category.__name__] += 1

    saved_level = own_logger.level
    logging.Logger.addHandler = add_handler  # type: ignore[method-assign]
    try:
        with warnings.catch_warnings(), _no_progress_bars():
            warnings.showwarning = show_warning
            root_logger.addHandler(to_log)
            if own_console is not None:
                root_logger.addHandler(own_console)
            own_logger.setLevel(min(saved_level or logging.INFO, logging.INFO))
            yield log
    finally:
        logging.Logger.addHandler = original_add  # type: ignore[method-assign]
        own_logger.setLevel(saved_level)
        root_logger.removeHandler(to_log)
        if own_console is not None:
            root_logger.removeHandler(own_console)
        for logger, handler in swapped:
            logger.removeHandler(to_log)
            logger.addHandler(handler)
        file.close()


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Every tqdm bar off while the block runs (mteb's bitext "Matching sentences", datasets' "Map",
    transformers' "Loading weights" all derive from ``tqdm.std.tqdm``); the stage's own progress goes
    to the CLI's view instead."""
    try:
        from tqdm import std
    except ImportError:
        yield
        return
    original = std.tqdm.__init__

    def quiet(self, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **{**kwargs, "disable": True})

    std.tqdm.__init__ = quiet  # type: ignore[method-assign]
    try:
        yield
    finally:
        std.tqdm.__init__ = original  # type: ignore[method-assign]


def logged_note(stats: dict[str, Any] | None, root: Path | None = None) -> str | None:
    """One line for the CLI: how many library warnings the stage's log holds instead of the console."""
    logged = (stats or {}).get("logged") or {}
    count = logged.get("library_warnings", 0)
    if not count:
        return None
    sources = ", ".join(f"{name} {n}" for name, n in list(logged.get("by_source", {}).items())[:4])
    where = root / logged["log"] if root is not None else logged["log"]
    return f"{count} library warning{'s' if count != 1 else ''} ({sources}) written to {where}, not shown"
