"""Where a command's log records go: the run's ``workbench.log``, never stderr.

stderr of a command that fails is its one ``error:`` line (docs/cli.md); warnings and notes from
the stages and libraries (``logging``, and Python warnings through it) go to ``RUN/workbench.log``
once the command has opened its run for writing, each line with time, level and source, under a
header naming the command. Records from before that moment are kept and written there too; a
command that never opens a run for writing (``languages``, ``status``, a dry run, a usage error)
prints them on stdout at its end instead. A log that cannot be written (full disk) is dropped
silently: it must never turn into a second error.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

LOG_FILE = "workbench.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RunLog(logging.Handler):
    """Buffers records until :meth:`attach` names the run, then appends them to its log file."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.setFormatter(logging.Formatter(FORMAT))
        self.path: Path | None = None
        self.pending: list[str] = []

    def attach(self, run_root: Path) -> None:
        if self.path is not None:
            return
        self.path = Path(run_root) / LOG_FILE
        command = " ".join(["workbench", *sys.argv[1:]])
        self._append([f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {command}", *self.pending])
        self.pending = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is not worth an error
            return
        if self.path is None:
            self.pending.append(line)
        else:
            self._append([line])

    def _append(self, lines: list[str]) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
        except OSError:
            pass  # full or read-only disk: the command's own error line says so if it matters

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass  # never logging's "--- Logging error ---" block on stderr

    def flush_unattached(self) -> None:
        """At the end of a command that never opened a run for writing: its records on stdout."""
        if self.path is None and self.pending:
            try:
                sys.stdout.write("\n".join(self.pending) + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
        self.pending = []


_HANDLER: RunLog | None = None


def install() -> RunLog:
    """Send every log record (and Python warnings) to a :class:`RunLog` instead of stderr."""
    global _HANDLER
    if _HANDLER is None:
        _HANDLER = RunLog()
        root = logging.getLogger()
        root.addHandler(_HANDLER)
        root.setLevel(logging.WARNING)  # libraries: warnings and errors only (httpx logs every request at INFO)
        logging.getLogger("workbench").setLevel(logging.INFO)
        logging.captureWarnings(True)
    return _HANDLER


def attach(run_root: Path) -> None:
    """The command writes this run: its log records go to ``RUN/workbench.log`` from now on."""
    if _HANDLER is not None:
        _HANDLER.attach(run_root)


def finish() -> None:
    if _HANDLER is not None:
        _HANDLER.flush_unattached()
