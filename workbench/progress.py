"""Progress state of the long model stages, handed to the CLI's view (``StageInput.progress``).

The stages update these objects and call the view with them; :mod:`workbench.cli_render` draws
them (a live line on a terminal, plain lines in a log). Generation has its own counters
(:class:`workbench.generate.engine.Progress`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainProgress:
    """Optimizer steps done of ``steps``, the last step's loss, since ``started`` (monotonic)."""

    steps: int
    step: int = 0
    loss: float | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass
class EvalProgress:
    """Where the eval stage is: target ``section`` of ``sections`` (a task, e.g. MIRACL yo), the system
    on it, and the texts (queries and passages) that system has embedded of the target's ``total``."""

    sections: int
    section: int = 0
    task: str = ""
    system: str = ""
    subset: str = ""  # the language (or language pair) being embedded now
    side: str = ""  # queries | documents | texts
    done: int = 0
    total: int = 0  # 0: unknown (BM25 ranks without embedding)
    started: float = field(default_factory=time.monotonic)  # when this system started on this target


class EvalWatch:
    """The eval stage's link to the view: one :class:`EvalProgress`, updated as systems start and as
    an encoder finishes texts (no-op without a view)."""

    def __init__(self, view: Callable[[Any], None] | None, sections: int):
        self.view = view
        self.state = EvalProgress(sections=sections)

    def start(self, section: int, target: Any, system: str, model: Any) -> None:
        """``system`` starts on ``target`` (section ``section``, 1-based); an encoder reports its texts here."""
        if self.view is None:
            return
        encodes = hasattr(model, "encode_texts")
        total = sum(c.get("queries_total", 0) + c.get("docs", 0) for c in target.counts.values()) if encodes else 0
        self.state = EvalProgress(sections=self.state.sections, section=section, task=target.task_name,
                                  system=system, subset=", ".join(target.counts), total=total)
        if encodes:
            model.progress = self.texts_done
        self.view(self.state)

    def texts_done(self, desc: str, count: int) -> None:
        subset, _, side = desc.rpartition(" ")
        self.state.subset, self.state.side = subset or desc, side
        self.state.done = min(self.state.total, self.state.done + count) if self.state.total else self.state.done + count
        self.view(self.state)
