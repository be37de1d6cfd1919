"""How the ``workbench`` process treats SIGINT and SIGTERM: exit status 130, at any point.

While a command runs, a signal stops it the way Ctrl-C does (KeyboardInterrupt in the main thread:
finished work kept, children stopped). Before it starts (imports) and after it has finished (exit
handlers), a signal only marks the process: it then ends with 130. Python resets its handlers to
the default while the interpreter shuts down, so a SIGTERM there used to kill the process with
143; :func:`exit_now` ends the process itself, after the exit handlers, instead.

Light on purpose (standard library only): installed first thing, before the CLI's imports.
"""

from __future__ import annotations

import _thread
import atexit
import os
import signal
import sys
import threading

_STATE = {"installed": False, "running": False, "signalled": False}
_INTERNAL_INTERRUPT = threading.Event()


def stop_main_thread() -> None:
    """From a helper thread (the embedded server's supervisor): interrupt the main thread like
    Ctrl-C does, marked as ours, so the CLI ends with the helper's error (exit 2), not as signalled."""
    _INTERNAL_INTERRUPT.set()
    _thread.interrupt_main()


def _on_signal(signum: int, frame: object) -> None:
    if _INTERNAL_INTERRUPT.is_set():  # the embedded server's supervisor stops us: its error, not a signal
        _INTERNAL_INTERRUPT.clear()
        if _STATE["running"]:
            raise KeyboardInterrupt
        return
    _STATE["signalled"] = True
    if _STATE["running"]:
        raise KeyboardInterrupt


def install() -> None:
    """SIGINT and SIGTERM as described above (Ctrl-C works even when the process was started with
    SIGINT ignored, as a background job)."""
    if not _STATE["installed"]:
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        _STATE["installed"] = True


def command_running(running: bool) -> None:
    """From now on a signal interrupts the command (True) or only sets the exit status (False)."""
    _STATE["running"] = running


def signalled() -> bool:
    return _STATE["signalled"]


def exit_now(code: int, before_exit=None) -> None:
    """Finish as the interpreter would (threads, atexit handlers, ``before_exit``, flushed output),
    then end with ``code``, or 130 if a signal came at any point."""
    _STATE["running"] = False
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # join non-daemon threads, as at exit
    except Exception:  # noqa: BLE001 - an exit path: never a traceback here
        pass
    try:
        atexit._run_exitfuncs()
        if before_exit is not None:
            before_exit()
    except Exception:  # noqa: BLE001
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe: nothing more to say
            pass
    os._exit(130 if _STATE["signalled"] else code)


def main() -> None:
    """The ``workbench`` console script: signals are handled from the first instant, then the CLI."""
    install()
    try:
        from workbench.cli import main as cli_main
    except KeyboardInterrupt:  # cannot happen (not running yet), kept for symmetry with the CLI
        exit_now(130)
    cli_main()
