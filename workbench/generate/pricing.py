"""What generation costs: USD per request from ``[generate] prices`` (per million tokens), Batch API discount included."""

from __future__ import annotations

from workbench.config import GenerateSection


class Pricer:
    def __init__(self, section: GenerateSection, batch: bool):
        price = section.prices.get(section.model)
        self.known = price is not None
        self.batch = batch
        factor = section.batch_discount if batch else 1.0
        self.input = (price.input if price else 0.0) * factor / 1e6
        self.output = (price.output if price else 0.0) * factor / 1e6

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input + completion_tokens * self.output
