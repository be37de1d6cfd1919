"""Tiny random Mistral models on disk, for CPU tests, demos and the GPU benchmark's dry run.

No hub access here: the tokenizer is a byte-level BPE trained with the ``tokenizers`` library on
whatever texts the caller passes (tests pass a few hundred Tatoeba lines), the weights are random
from a fixed seed. The folder loads with ``AutoModel`` / ``AutoTokenizer`` like any HF model.
"""

from __future__ import annotations

from pathlib import Path


def build_tokenizer(texts: list[str], vocab_size: int = 512):
    """A ``PreTrainedTokenizerFast`` with <s>, </s>, <pad>, <unk>, trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def build_tiny_mistral(
    folder: Path | str,
    texts: list[str],
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Write a random ``MistralModel`` + trained tokenizer to ``folder`` and return it."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer(texts, vocab_size)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        sliding_window=None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = MistralForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
