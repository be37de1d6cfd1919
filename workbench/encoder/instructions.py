"""The instruction policy for mteb tasks: which instruction a task's texts get, and on which side.

Owns ``instructions.toml`` (task name -> instruction, beside this module), read by eval for the
query instruction and by train's export for the model's prompts; the task's own query prompt wins
over the table. Tasks with no corpus side (STS, bitext, classification …) instruct every text.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.resources import package_path

INSTRUCTIONS_FILE = package_path("encoder", "instructions.toml")
# mteb task types where every text is a "query" (no corpus side): the instruction goes on all texts,
# as E5-mistral's evaluation does for STS, bitext mining, classification, clustering.
RETRIEVAL_TYPES = {"Retrieval", "Reranking", "InstructionRetrieval", "InstructionReranking"}


@cache
def task_instructions(path: Path = INSTRUCTIONS_FILE) -> dict[str, str]:
    """The per-task instruction table (task name -> instruction) for tasks without their own prompt."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise WorkbenchError(f"cannot read instruction table ({err})", where=str(path)) from None
    tasks = data.get("tasks")
    if not isinstance(tasks, dict) or not all(isinstance(v, str) for v in tasks.values()):
        raise WorkbenchError("field 'tasks' must be a table of strings", where=str(path))
    return dict(tasks)


def task_instruction(task_metadata: Any, table: dict[str, str] | None = None) -> tuple[str, str]:
    """(instruction, source) for an mteb task: the task's own query prompt, else the table, else ""."""
    prompt = getattr(task_metadata, "prompt", None)
    if isinstance(prompt, dict):
        prompt = prompt.get("query") or next((v for k, v in prompt.items() if str(getattr(k, "value", k)) == "query"), None)
    if isinstance(prompt, str) and prompt.strip():
        return prompt.strip(), "task prompt"
    table = task_instructions() if table is None else table
    name = getattr(task_metadata, "name", "")
    if table.get(name):
        return table[name], str(INSTRUCTIONS_FILE.name)
    return "", "none"


def instructs_every_text(task_metadata: Any) -> bool:
    """True for tasks with no corpus side (STS, bitext, classification …): all texts get the instruction."""
    kind = getattr(task_metadata, "type", None)
    return bool(kind) and kind not in RETRIEVAL_TYPES
