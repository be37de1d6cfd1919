"""How long to train: epochs over the accepted records (the paper trains one), or explicit steps.

``train.epochs`` (default 1.0) sets the number of optimizer steps to ``ceil(epochs × records /
batch)``; ``train.steps``, when set, overrides it. A batch never holds one record twice, so when the
data has fewer usable records (weight > 0) than ``batch_size`` the batch shrinks to the records
(rounded down to a multiple of the number of processes) and a warning says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import polars as pl

from workbench.config import TrainSection
from workbench.errors import WorkbenchError
from workbench.run import Folder


@dataclass(frozen=True)
class Schedule:
    records: int  # usable records (weight > 0)
    batch_size: int  # global batch actually used
    steps: int
    epochs: float  # passes over the usable records that ``steps`` make
    from_steps: bool  # True: train.steps was set explicitly
    warnings: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        how = "train.steps (explicit)" if self.from_steps else "train.epochs"
        return [
            ("records (weight > 0)", f"{self.records:,}"),
            ("global batch", f"{self.batch_size:,}"),
            ("optimizer steps", f"{self.steps:,} (from {how})"),
            ("epochs", f"{self.epochs:.2f}"),
        ]


def usable_records(records: pl.DataFrame | int) -> int:
    if isinstance(records, int):
        return records
    return int((records["weight"] > 0).sum())


def plan_schedule(tc: TrainSection, records: pl.DataFrame | int, world_size: int = 1) -> Schedule:
    """Batch size and step count for ``records`` on ``world_size`` processes (see the module docstring)."""
    n = usable_records(records)
    world = max(1, world_size)
    warnings: list[str] = []
    batch = tc.batch_size
    if n < batch:
        batch = n - n % world
        if batch < world:
            raise WorkbenchError(
                f"{n} usable training record(s) cannot fill one batch on {world} process(es)",
                where=f"{Folder.ACCEPTED}/",
                fix="generate and accept more data, or train on fewer processes",
            )
        warnings.append(
            f"train.batch_size {tc.batch_size} > {n} usable records: the batch shrinks to {batch} "
            "so that no record appears twice in one batch"
        )
    if tc.steps is not None:
        steps = tc.steps
    else:
        steps = max(1, math.ceil(tc.epochs * n / batch))
    epochs = steps * batch / n if n else 0.0
    if epochs > 3:
        warnings.append(f"{steps} steps of {batch} make {epochs:.1f} passes over {n} records: a tiny training set")
    return Schedule(records=n, batch_size=batch, steps=steps, epochs=round(epochs, 3),
                    from_steps=tc.steps is not None, warnings=warnings)
