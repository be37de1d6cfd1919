"""One error type the CLI turns into one clear line: what went wrong, where, and what to do."""

from __future__ import annotations


class WorkbenchError(Exception):
    """An error a user can act on. ``str(err)`` is the single line the CLI prints.

    ``where`` names the file (and field) at fault, ``fix`` says what to do about it.
    """

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f" ({self.fix})"
        return text


class ConfigError(WorkbenchError):
    """A data or configuration file is malformed (language file, run config, prompt)."""


class UnknownLanguageError(WorkbenchError):
    """A language code that is not in the registry."""


class TableError(WorkbenchError):
    """A Parquet table in a run directory is missing, corrupt or has the wrong schema."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when it has none), at most ``limit``
    characters: what a one-line error quotes from a library's multi-line message."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]
