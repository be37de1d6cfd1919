"""Prompt templates (``prompts/<family>_<step>.jinja2``), output schemas and JSON extraction.

A brainstorm answer is ``{"tasks": [str, ...]}``; an example answer is one JSON object with the
family's fields (:data:`workbench.families.FAMILIES`). Every answer goes through
:func:`parse_answer`: JSON extraction (``json.loads(strict=False)``, so raw newlines inside strings
are accepted), then pydantic validation. A failure is a :class:`InvalidAnswer` carrying the reason.
"""

from __future__ import annotations

import json
import math
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from workbench.errors import ConfigError
from workbench.families import FAMILIES
from workbench.languages import Language, Registry
from workbench.resources import data_dir

# llama.cpp's grammar engine crashed on maxLength 1200 (measured); keep every bound <= 400.
MAX_TASK_CHARS = 400
N_TASKS = 20


class InvalidAnswer(ValueError):
    """The model's text is not valid JSON for the expected schema; ``str()`` is the reason."""


def prompts_dir() -> Path:
    return data_dir("prompts", "WORKBENCH_PROMPTS")


@lru_cache(maxsize=4)
def _environment(directory: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


def template_name(family: str, step: str) -> str:
    return f"{family}_{step}.jinja2"


def render(family: str, step: str, variables: dict[str, Any], directory: Path | None = None) -> str:
    """Render one prompt; a missing template or variable is one clear error naming the file."""
    folder = directory or prompts_dir()
    name = template_name(family, step)
    try:
        return _environment(str(folder)).get_template(name).render(**variables).strip()
    except jinja2.TemplateNotFound:
        raise ConfigError("prompt template not found", where=str(Path(folder) / name),
                          fix="restore it from the repository") from None
    except jinja2.UndefinedError as err:
        raise ConfigError(f"template variable missing: {err.message}", where=str(Path(folder) / name)) from None
    except jinja2.TemplateSyntaxError as err:
        raise ConfigError(f"template syntax error line {err.lineno}: {err.message}",
                          where=str(Path(folder) / name)) from None


def brainstorm_messages(family: str, language: Language) -> list[dict[str, str]]:
    text = render(family, "brainstorm", {"language": language.name, "note": language.prompt_note, "n_tasks": N_TASKS})
    return [{"role": "user", "content": text}]


def example_messages(slot: dict[str, Any], task: str | None, registry: Registry) -> list[dict[str, str]]:
    """The example-step prompt for one plan row (placeholders filled from the row)."""
    language = registry.get(slot["language"])
    variables: dict[str, Any] = {k: v for k, v in slot.items() if v is not None}
    variables.update(language=language.name, note=language.prompt_note, task=task or "")
    if FAMILIES[slot["family"]].cross_lingual:
        target = registry.get(slot["target_language"])
        variables.update(target_language=target.name, target_note=target.prompt_note)
    text = render(slot["family"], "example", variables)
    return [{"role": "user", "content": text}]


# A brainstorm round yields fewer distinct tasks than asked for once merged with earlier rounds
# (repeats across rounds); plan rounds as if only this share were new.
NEW_TASK_SHARE = 0.75


def brainstorm_rounds(slots: int, max_task_uses: int) -> int:
    """Brainstorm requests for a (language, family) with ``slots`` examples, so that each task is
    used by at most ``max_task_uses`` examples (the paper: ~150k tasks for ~500k examples)."""
    return max(1, math.ceil(slots / (max_task_uses * N_TASKS * NEW_TASK_SHARE)))


def merge_tasks(rounds: list[list[str]]) -> list[str]:
    """Tasks of every brainstorm round, first occurrence kept, duplicates (case and spacing) dropped."""
    seen: set[str] = set()
    merged = []
    for tasks in rounds:
        for task in tasks:
            norm = " ".join(task.casefold().split()).rstrip(".")
            if norm not in seen:
                seen.add(norm)
                merged.append(task)
    return merged


def assign_tasks(tasks: list[str], slot_ids: list[str], seed: int) -> dict[str, str]:
    """The task each slot uses: a seeded shuffle dealt round-robin over the slots in plan order, so
    no task is used more than ``ceil(len(slot_ids) / len(tasks))`` times; the same on every re-run."""
    order = list(tasks)
    random.Random(f"{seed}:{len(slot_ids)}:{slot_ids[0] if slot_ids else ''}").shuffle(order)
    return {slot_id: order[index % len(order)] for index, slot_id in enumerate(slot_ids)}


# -- output models -------------------------------------------------------------------------
class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class BrainstormAnswer(_Answer):
    tasks: list[str] = Field(min_length=1)


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("empty text")
    return value


@lru_cache(maxsize=None)
def answer_model(family: str) -> type[BaseModel]:
    """A pydantic model with the family's fields, each a non-empty string."""
    from typing import Annotated

    from pydantic import AfterValidator

    Text = Annotated[str, AfterValidator(_nonblank)]
    fields = {name: (Text, ...) for name in FAMILIES[family].fields}
    return create_model(f"{family.title().replace('_', '')}Answer", __base__=_Answer, **fields)


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON schema sent as structured-output constraint ("brainstorm" or a family name).

    Strict-mode friendly: every property required, ``additionalProperties`` false, no
    ``maxLength`` above 400 (llama.cpp), the brainstorm list wrapped in an object.
    """
    if kind == "brainstorm":
        return {
            "type": "object",
            "properties": {"tasks": {"type": "array", "items": {"type": "string"}}},
            "required": ["tasks"],
            "additionalProperties": False,
        }
    names = FAMILIES[kind].fields
    return {
        "type": "object",
        "properties": {name: {"type": "string"} for name in names},
        "required": list(names),
        "additionalProperties": False,
    }


def extract_json(text: str) -> Any:
    """The first JSON object in ``text``: whole text, a ```json fence, or the outermost braces."""
    candidates = [text.strip()]
    if "```" in text:
        for chunk in text.split("```")[1::2]:
            candidates.append(chunk.removeprefix("json").strip())
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    last_error = "no JSON object found"
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return json.loads(candidate, strict=False)
        except json.JSONDecodeError as err:
            last_error = f"invalid JSON ({err.msg} at char {err.pos})"
    raise InvalidAnswer(last_error)


def parse_answer(kind: str, text: str | None) -> dict[str, Any]:
    """Validate one answer. ``kind`` is "brainstorm" or a family name. Raises InvalidAnswer."""
    if text is None or not text.strip():
        raise InvalidAnswer("empty answer")
    data = extract_json(text)
    if kind == "brainstorm" and isinstance(data, list):
        data = {"tasks": data}  # tolerate a bare list
    if not isinstance(data, dict):
        raise InvalidAnswer(f"expected a JSON object, got {type(data).__name__}")
    model = BrainstormAnswer if kind == "brainstorm" else answer_model(kind)
    try:
        parsed = model.model_validate(data)
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "answer"
        raise InvalidAnswer(f"schema: field '{where}': {problem['msg']}") from None
    result = parsed.model_dump()
    if kind == "brainstorm":
        tasks = [t.strip()[:MAX_TASK_CHARS] for t in result["tasks"] if isinstance(t, str) and t.strip()]
        if not tasks:
            raise InvalidAnswer("schema: field 'tasks': no non-empty task")
        result = {"tasks": list(dict.fromkeys(tasks))}
    return result
