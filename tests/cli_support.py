"""Running ``workbench`` in-process from tests, as a user would type it."""

from __future__ import annotations

import sys

from workbench import cli


def workbench(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``workbench ARGS`` through ``cli.main()``; (exit status, stdout, stderr)."""
    saved = sys.argv
    sys.argv = ["workbench", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved
    out = capsys.readouterr()
    return code, out.out, out.err
