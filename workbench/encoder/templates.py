"""Text templates: how an instruction and a text become one input string (``{instruction}``, ``{text}``)."""

from __future__ import annotations

QUERY_TEMPLATE = "Instruct: {instruction}\nQuery: {text}"


def render(template: str | None, text: str, instruction: str = "") -> str:
    """``template`` with ``{instruction}`` and ``{text}`` filled; the text itself is never parsed."""
    if not template:
        return text
    head, _, tail = template.partition("{text}")
    return head.replace("{instruction}", instruction) + text + tail.replace("{instruction}", instruction)


def with_instruction(instruction: str, text: str) -> str:
    """The query side of the recipe: ``Instruct: {instruction}\\nQuery: {text}``."""
    return render(QUERY_TEMPLATE, text, instruction.strip())
