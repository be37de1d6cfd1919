"""Running ``workbench`` in-process from tests, as a user would type it."""

from __future__ import annotations

import sys

from workbench import cli


def workbench(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``workbench ARGS`` through ``cli.run_cli()`` (``cli.main()`` without its process exit);
    (exit status, stdout, stderr)."""
    saved = sys.argv
    sys.argv = ["workbench", *args]
    try:
        code = cli.run_cli()
    finally:
        sys.argv = saved
    out = capsys.readouterr()
    return code, out.out, out.err
