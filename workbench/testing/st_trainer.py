"""The E5-mistral recipe on sentence-transformers' trainer, for comparing it with ``workbench.train``.

``tests/test_trainer_equivalence.py`` trains the tiny random Mistral with both, on the same batches
from the same LoRA start; docs/architecture.md ("Why the hand-written training loop") has what it
found. Not used by a real run. Imports sentence-transformers at import time: import this lazily.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from sentence_transformers.base.sampler import DefaultBatchSampler


class FixedBatches(DefaultBatchSampler):
    """Given batches of dataset indices, in the given order, as the trainer's batch sampler.

    Module-level so the trainer can pickle its arguments (``training_args.bin``) when it saves.
    """

    def __init__(self, dataset, batches: list[list[int]], **kwargs):
        super().__init__(range(len(dataset)), batch_size=kwargs["batch_size"], drop_last=kwargs["drop_last"])
        self.batches = [list(batch) for batch in batches]

    def __iter__(self):
        return iter([list(batch) for batch in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


def last_token_embedder(model: Path | str, max_length: int, *, restore_eos: bool, lora: bool = True):
    """Transformer + last-token Pooling + Normalize over a decoder, left padding as the loop pads.

    ``restore_eos``: the tokenizer's post-processor appends EOS (a fast tokenizer post-processes after
    truncating, so EOS survives truncation). Both flags are set: assigning one regenerates the
    post-processor from both, and ``add_bos_token`` reads False on the tiny tokenizer although its rows
    start with BOS. LoRA (r16, alpha 32, all linear layers, no dropout) goes on with peft directly, as
    the loop does it: ``SentenceTransformer.add_adapter`` goes through transformers' PEFT integration,
    which refuses peft < 0.22 (the venv resolves transformers 5.24 with peft 0.21.2).
    """
    from peft import LoraConfig, get_peft_model
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    module = Transformer(str(model), max_seq_length=max_length, model_kwargs={"dtype": torch.float32})
    module.tokenizer.padding_side = "left"
    if restore_eos:
        module.tokenizer.add_bos_token = True
        module.tokenizer.add_eos_token = True
    if lora:
        config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", bias="none")
        module.model = get_peft_model(module.model, config)
    pooling = Pooling(module.get_embedding_dimension(), pooling_mode="lasttoken")
    return SentenceTransformer(modules=[module, pooling, Normalize()], device="cpu")


def copy_lora(st, start: dict[str, torch.Tensor]) -> None:
    """Set the LoRA matrices of ``st`` to ``start`` (names as in the loop's PEFT model)."""
    named = {name: p for name, p in st[0].model.named_parameters() if p.requires_grad}
    if sorted(named) != sorted(start):
        raise ValueError(f"LoRA modules differ: {sorted(set(named) ^ set(start))[:4]}")
    with torch.no_grad():
        for name, value in start.items():
            named[name].copy_(value)


def train(st, columns: dict[str, list[str]], batches: list[list[int]], out: Path, *, temperature: float,
          learning_rate: float, seed: int, loss=None, **arguments):
    """``SentenceTransformerTrainer`` over ``batches`` with the loop's optimiser settings.

    ``columns``: anchor, positive, negative texts (in that order: the loss reads them by position).
    The loop's AdamW: weight decay 0.1 on every LoRA matrix, linear schedule, no warm-up, no gradient
    clipping (the trainer's default clips at 1.0). ``arguments`` override training arguments (e.g.
    ``deepspeed``). Returns (trainer, the loss of each step, unrounded).
    """
    import datasets
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    recipe = dict(output_dir=str(out), max_steps=len(batches), per_device_train_batch_size=len(batches[0]),
                  learning_rate=learning_rate, weight_decay=0.1, warmup_steps=0, lr_scheduler_type="linear",
                  max_grad_norm=0.0, optim="adamw_torch", seed=seed, logging_steps=1, report_to=[],
                  save_strategy="no", use_cpu=True, disable_tqdm=True,
                  batch_sampler=functools.partial(FixedBatches, batches=batches))
    args = SentenceTransformerTrainingArguments(**{**recipe, **arguments})
    loss = loss or MultipleNegativesRankingLoss(st, scale=1 / temperature)
    losses: list[float] = []
    loss.register_forward_hook(lambda module, inputs, output: losses.append(float(output.detach())))
    dataset = datasets.Dataset.from_dict(columns)
    trainer = SentenceTransformerTrainer(model=st, args=args, train_dataset=dataset, loss=loss)
    trainer.train()
    return trainer, losses
