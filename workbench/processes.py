"""Child processes that never outlive the workbench: the embedded LLM server, the filter's pool.

A stage stopped by Ctrl-C, SIGTERM or SIGKILL must leave no process behind: children ask Linux to
send them SIGTERM when their parent dies (covers SIGKILL), and an interrupted stage terminates its
children itself (covers Ctrl-C and SIGTERM, which the CLI turns into KeyboardInterrupt).
"""

from __future__ import annotations

import multiprocessing
import signal
import socket

PR_SET_PDEATHSIG = 1
def die_with_parent() -> None:
    """In a child: ask Linux to SIGTERM it when its parent dies (even by SIGKILL). No-op off Linux."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def init_pool_worker() -> None:
    """Pool-worker set-up: die with the parent, and leave Ctrl-C to the parent (which stops us)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def terminate_children(timeout_s: float = 3.0) -> None:
    """Terminate (then kill) this process's multiprocessing children, e.g. pool workers mid-chunk."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout_s)
        if child.is_alive():
            child.kill()
            child.join(1)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the embedded LLM server, the gloo/NCCL rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
