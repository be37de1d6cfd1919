"""A stand-in for the embedded LLM server that crashes like a mis-built llama.cpp — TESTS ONLY.

It is the OpenAI test double (:mod:`workbench.testing.openai_double`) with one change: after
``--good`` chat completions in total (counted across restarts in ``--state``), every further chat
completion kills the process with ``--signal`` before answering, the way a llama.cpp build with
instructions the CPU refuses dies at its first matrix kernel. ``GET /v1/models`` keeps answering,
as llama.cpp's does. ``--hang-from N`` makes completion N (counted the same way) and every later
one wait forever instead: a server that is up but never answers. ``--latency`` slows answers (for
interrupt tests). Used through the embedded
server's command override::

    WORKBENCH_EMBEDDED_SERVER='python -m workbench.testing.crashing_server --port {port} --good 0'
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import signal
from pathlib import Path

from workbench.testing.openai_double import Faults, OpenAIDouble


class CrashingDouble(OpenAIDouble):
    def __init__(self, *args, good: int, state: Path, crash_signal: signal.Signals, per_process: bool,
                 hang_from: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.good, self.state, self.crash_signal, self.per_process = good, state, crash_signal, per_process
        self.hang_from = hang_from
        self.answered_here = 0

    def _count(self) -> int:
        if self.per_process:
            self.answered_here += 1
            return self.answered_here
        with open(self.state, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            count = int(handle.read().strip() or 0) + 1
            handle.seek(0)
            handle.truncate()
            handle.write(str(count))
        return count

    async def _chat(self, headers, body):
        count = self._count()
        if self.hang_from is not None and count >= self.hang_from:
            await asyncio.Event().wait()
        if count > self.good:
            os.kill(os.getpid(), self.crash_signal)
        return await super()._chat(headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description="A crashing stand-in for the embedded LLM server (TESTS ONLY).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--good", type=int, default=0, help="chat completions answered in total before crashing")
    parser.add_argument("--state", default=None, help="file counting completions across restarts")
    parser.add_argument("--per-process", action="store_true", help="count --good per process, not in total")
    parser.add_argument("--signal", default="SIGSEGV", help="signal the process dies of")
    parser.add_argument("--hang-from", type=int, default=None,
                        help="from this completion on (counted like --good), never answer")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    args = parser.parse_args()
    state = Path(args.state or f"/tmp/workbench-crashing-server-{args.port}.count")
    crash_signal = signal.Signals[args.signal] if args.signal.startswith("SIG") else signal.Signals(int(args.signal))
    double = CrashingDouble(args.data, Faults(latency=args.latency), models=(args.model,), port=args.port,
                            deterministic=True, good=args.good, state=state, crash_signal=crash_signal,
                            per_process=args.per_process, hang_from=args.hang_from)

    async def serve() -> None:
        await double.start_async()
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
