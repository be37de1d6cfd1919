"""The ``workbench`` command line: parses options, builds typed configs, calls one stage function.

Every stage lives in its own module; this file holds the app, the entry point and the command
table; the commands are in :mod:`workbench.cli_data` (data stages), :mod:`workbench.cli_model`
(train, eval) and :mod:`workbench.cli_outputs` (report, export, run, status). A
:class:`WorkbenchError` anywhere becomes one line on stderr and exit status 2, with no traceback.
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m workbench.cli`: signals are handled from the first instant, imports included
    from workbench import signals as _early

    _early.install()

import errno
import sqlite3
import sys
from typing import Annotated

import typer

from workbench import cli_data, cli_model, cli_outputs, logs, signals
from workbench.cli_errors import click_exception_types, is_connection_error, print_error, usage_error_line
from workbench.cli_render import console, err_console
from workbench.errors import WorkbenchError
from workbench.locks import command_scope

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}  # subcommands inherit it from the app's context

app = typer.Typer(
    name="workbench",
    help="Multilingual E5 synthetic-data workbench: plan, generate, filter, audit, train, eval, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help renders literally: PATH[@SYSTEM], runs/<[run] name>
    context_settings=HELP_OPTIONS,
)


def _print_version(value: bool) -> None:
    if value:
        from workbench import __version__

        console.print(f"workbench {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Multilingual E5 synthetic-data workbench: plan, generate, filter, audit, train, eval, report."""


def _first_paragraph(doc: object) -> str | None:
    return " ".join(doc.strip().split("\n\n")[0].split()) if isinstance(doc, str) and doc.strip() else None


class _PipelineCommand(typer.core.TyperCommand):
    """``workbench run``: its help names the stages in order. They are imported only when a help text
    is shown (every stage module, a few seconds), not by every command."""

    @property
    def help(self) -> str:
        from workbench.stages import STAGE_NAMES

        return ("Run the whole pipeline from one config (" + " → ".join(STAGE_NAMES)
                + "); stages whose inputs are unchanged are skipped.")

    @help.setter
    def help(self, value: str | None) -> None:
        pass  # click sets the docstring; the property above is the help

    @property
    def short_help(self) -> str:
        return self.help

    @short_help.setter
    def short_help(self, value: str | None) -> None:
        pass


def _untruncated_command_help(typer_app: typer.Typer) -> None:
    """The command list in ``--help`` shows each command's whole first paragraph (click cuts it to the
    terminal width with "...")."""
    for command in typer_app.registered_commands:
        command.short_help = command.short_help or _first_paragraph(command.help or command.callback.__doc__)
    for group in typer_app.registered_groups:
        group.short_help = group.short_help or _first_paragraph(group.help) or _first_paragraph(group.typer_instance.info.help)
        _untruncated_command_help(group.typer_instance)


def main() -> None:
    """Console-script entry point: runs one command and ends the process with its exit status
    (0 done, 2 a problem to fix, 130 a signal at any point, 1 a bug); see :mod:`workbench.signals`."""
    signals.install()
    logs.install()  # log records and warnings go to RUN/workbench.log, never to stderr
    code = 130
    try:
        signals.command_running(True)
        try:
            code = run_cli()
        finally:
            signals.command_running(False)
    except KeyboardInterrupt:  # a signal in the instants around the command's own handlers
        err_console.print("interrupted: finished work is kept; re-run the same command to resume")
    signals.exit_now(code, before_exit=logs.finish)


def run_cli() -> int:
    """Run one command from ``sys.argv``; its exit status (tests call this in-process)."""
    try:
        _run_command()
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def _run_command() -> None:
    """One command: one clear line and exit 2 on any user-facing error."""
    try:
        with command_scope():
            code = app(prog_name="workbench", standalone_mode=False)
        # typer (>= 0.29) turns Ctrl-C into Exit(130) and, outside standalone mode, returns that code
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except WorkbenchError as err:
        print_error(err.line())
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted: finished work is kept; re-run the same command to resume")
        sys.exit(130)
    except OSError as err:  # a write outside the run-directory helpers (those raise WorkbenchError)
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        print_error(f"{err.filename or 'writing'}: {err.strerror} (free space or fix permissions, then re-run the "
                     "same command; finished work is kept)")
        sys.exit(2)
    except sqlite3.OperationalError as err:
        if "full" not in str(err):
            raise
        print_error(f"request cache: {err} (free space on the run directory's disk, then re-run the same command; "
                     "finished requests are kept)")
        sys.exit(2)
    except Exception as err:  # usage errors (unknown option, bad value, missing argument, unknown command)
        exit_types, usage_types = click_exception_types()
        if isinstance(err, exit_types):
            sys.exit(getattr(err, "exit_code", 0))
        if isinstance(err, usage_types):
            print_error(usage_error_line(err))
            sys.exit(2)
        if is_connection_error(err):  # a network failure no stage turned into its own line
            print_error(f"cannot reach the server ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else 'no answer'}) "
                         "(check the network and --base-url / base_url, then re-run the same command; finished work is kept)")
            sys.exit(2)
        raise

# --- the command table: help lists the commands in this order ----------------------------------
app.command()(cli_data.languages)
app.command()(cli_data.plan)
app.command()(cli_data.generate)
batch_app = typer.Typer(help="OpenAI Batch API jobs of a run: status, collect.", no_args_is_help=True,
                        rich_markup_mode=None, context_settings=HELP_OPTIONS)
app.add_typer(batch_app, name="batch")
batch_app.command("status")(cli_data.batch_status_command)
batch_app.command("collect")(cli_data.batch_collect_command)
app.command()(cli_data.serve)
app.command("filter")(cli_data.filter_command)
app.command()(cli_data.audit)
app.command()(cli_model.train)
app.command("eval")(cli_model.eval_command)
app.command()(cli_outputs.report)
app.command("export")(cli_outputs.export_command)
app.command("run", cls=_PipelineCommand)(cli_outputs.run_command)
app.command()(cli_outputs.status)
_untruncated_command_help(app)


if __name__ == "__main__":
    main()
