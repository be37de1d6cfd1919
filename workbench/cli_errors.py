"""How the CLI turns failures into one line: usage errors, connection errors, the ``error:`` line."""

from __future__ import annotations

import sys

import typer

from workbench.cli_render import err_console


def is_connection_error(err: BaseException) -> bool:
    """openai's and httpx's connection-level errors (refused, DNS, TLS, timeout), by class."""
    for module, name in (("openai", "APIConnectionError"), ("httpx", "TransportError")):
        found = getattr(sys.modules.get(module), name, None)
        if found is not None and isinstance(err, found):
            return True
    return False


def print_error(line: str) -> None:
    from rich.text import Text

    # a Text, not markup: messages quote user input and config syntax such as [generate]
    err_console.print(Text.assemble(("error:", "bold red"), " ", line), highlight=False, soft_wrap=True)


def click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(exit, error) exception classes of whichever click typer uses.

    typer >= 0.20 vendors click as ``typer._click`` with its own exception classes, so the
    standalone ``click``'s never match there; older typer raises the standalone ones.
    """
    exits: list[type] = [typer.Exit]
    errors: list[type] = []
    try:
        from typer._click import exceptions as vendored

        errors.append(vendored.ClickException)
    except ImportError:
        pass
    try:
        import click

        exits.append(click.exceptions.Exit)
        errors.append(click.exceptions.ClickException)
    except ImportError:
        pass
    return tuple(exits), tuple(errors)


def usage_error_line(err: Exception) -> str:
    """One line for a click usage error: what was wrong, the closest valid spelling, where to look."""
    import difflib

    ctx = getattr(err, "ctx", None)
    path = ctx.command_path if ctx is not None else "workbench"
    help_hint = f"see '{path} --help'"
    kind = type(err).__name__
    if kind == "NoArgsIsHelpError" and ctx is not None:
        names = ", ".join(ctx.command.list_commands(ctx))
        return f"{path}: no command given (one of: {names}; {help_hint})"
    if kind == "NoSuchOption":
        possible = sorted(getattr(err, "possibilities", None) or [])
        hint = f"did you mean {' or '.join(possible)}?" if possible else help_hint
        return f"{path}: no such option {err.option_name} ({hint})"  # type: ignore[attr-defined]
    message = err.format_message() if hasattr(err, "format_message") else str(err)
    if message.startswith("No such command") and ctx is not None and hasattr(ctx.command, "list_commands"):
        typed = message.split("'")[1] if message.count("'") >= 2 else ""
        close = difflib.get_close_matches(typed, ctx.command.list_commands(ctx), n=2, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else help_hint
        return f"{path}: no such command '{typed}' ({hint})"
    return f"{path}: {message.rstrip('.')} ({help_hint})"
