"""sentence-transformers' ``SentenceTransformerTrainer`` against the hand-written loop, on the tiny random Mistral.

Same records (``train_support.accepted_run``), same batches (the loop's ``BatchSampler`` fed to the
trainer as its batch sampler), same LoRA initial weights (copied), dropout off, fp32 on CPU. What
holds and what does not is written up in docs/architecture.md ("Why the hand-written training loop
(and not SentenceTransformerTrainer)"); the tests below are those measurements, each able to fail:
the equivalences that hold, and the gaps asserted as they are today, so a test fails when
sentence-transformers closes one.
"""

from __future__ import annotations

import datetime
import math
import os
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from workbench.config import TrainSection
from workbench.encoder import CONTRACT_FILE, load_spec, pool, tokenize
from workbench.processes import free_port
from workbench.train import data as train_data
from workbench.train.distributed import DistState, setup_distributed
from workbench.train.export import save_trainable
from workbench.train.loop import Batch, Loop
from workbench.train.loss import info_nce
from workbench.train.model import load_model
from workbench.train.zero import build_engine

from train_support import accepted_run, tiny_model

torch.set_num_threads(1)

SEED = 7
STEPS = 4
BATCH = 16
MAX_LENGTH = 48
LEARNING_RATE = 1e-3
TEMPERATURE = 0.02
LONG_TEXT = " ".join(["lorem ipsum dolor sit amet"] * 40)  # ~200 words, far past MAX_LENGTH tokens
TEXTS = ["Tom is here.", "Instruct: Find the sentence that was typed\nQuery: I like tea.", LONG_TEXT]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "mistral", shared_data)


@pytest.fixture(scope="module")
def records(tmp_path_factory, shared_data):
    run = accepted_run(tmp_path_factory.mktemp("run") / "run", shared_data, n=64)
    return train_data.build_records(train_data.read_accepted(run), TrainSection()).records


def _section(tiny: Path, **changes) -> TrainSection:
    recipe = dict(model=str(tiny), deepspeed="none", batch_size=BATCH, steps=STEPS, learning_rate=LEARNING_RATE,
                  warmup_steps=0, max_length=MAX_LENGTH, lora_dropout=0.0, gradient_checkpointing=False,
                  temperature=TEMPERATURE)
    return TrainSection(**{**recipe, **changes})


def _batches(records) -> list[list[int]]:
    sampler = train_data.BatchSampler(records, BATCH, random.Random(SEED))
    return [next(sampler) for _ in range(STEPS)]


def _columns(records, indices: list[int]) -> tuple[list[str], list[str], list[str]]:
    return ([records["query"][i] for i in indices], [records["positive"][i] for i in indices],
            [records["negative"][i] for i in indices])


# ---- the loop side ------------------------------------------------------------------------------
def _train_loop(tiny: Path, records, batches, out: Path, chunk_size: int = 0,
                zero3_config: Path | None = None) -> SimpleNamespace:
    """The loop's steps on ``batches``; returns losses, the LoRA weights it started from, the saved adapter."""
    if zero3_config is None:
        tc = _section(tiny, chunk_size=chunk_size)
        state = DistState(0, 1, 0, torch.device("cpu"))
    else:
        tc = _section(tiny, chunk_size=chunk_size, deepspeed="zero3", deepspeed_config=str(zero3_config))
        state = setup_distributed(use_deepspeed=True)
    torch.manual_seed(SEED)
    loaded = load_model(tiny, lora_dropout=0.0, gradient_checkpointing=False, max_length=MAX_LENGTH)
    start = {name: p.detach().clone() for name, p in loaded.embedder.backbone.named_parameters() if p.requires_grad}
    engine, optimizer, scheduler = build_engine(tc, loaded, state, bf16=False)
    loop = Loop(tc, loaded, state, engine, optimizer, scheduler)
    losses = []
    for indices in batches:
        queries, positives, negatives = _columns(records, indices)
        losses.append(loop.step(Batch(queries, positives, negatives, [True] * len(indices)))[0])
    return SimpleNamespace(losses=losses, start=start, adapter=save_trainable(loaded, out, is_main=True))


def _adapter_embeddings(tiny: Path, adapter: Path, texts: list[str]) -> torch.Tensor:
    """What eval computes from the loop's saved adapter: EOS after truncation, last token, L2."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModel.from_pretrained(str(tiny), dtype=torch.float32), str(adapter)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    tokenizer.padding_side = "left"
    batch = tokenize(tokenizer, texts, MAX_LENGTH, add_eos=True)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    return torch.nn.functional.normalize(pool(hidden, batch["attention_mask"], "last_token").float(), dim=-1)


# ---- the sentence-transformers side (workbench.testing.st_trainer) ------------------------------
def _st_model(tiny: Path, *, restore_eos: bool, lora: bool = True):
    from workbench.testing.st_trainer import last_token_embedder

    return last_token_embedder(tiny, MAX_LENGTH, restore_eos=restore_eos, lora=lora)


def _st_train(st, records, batches, out: Path, loss=None, **arguments):
    from workbench.testing.st_trainer import train

    columns = {"anchor": list(records["query"]), "positive": list(records["positive"]),
               "negative": list(records["negative"])}
    return train(st, columns, batches, out, temperature=TEMPERATURE, learning_rate=LEARNING_RATE, seed=SEED, loss=loss,
                 **arguments)


@pytest.fixture(scope="module")
def trained(tiny, records, tmp_path_factory) -> SimpleNamespace:
    """Both trainers on the same batches from the same LoRA start; the trainer's model saved and reloaded."""
    from sentence_transformers import SentenceTransformer

    from workbench.testing.st_trainer import copy_lora

    out = tmp_path_factory.mktemp("trained")
    batches = _batches(records)
    loop = _train_loop(tiny, records, batches, out / "adapter")
    st = _st_model(tiny, restore_eos=True)
    copy_lora(st, loop.start)
    _, st_losses = _st_train(st, records, batches, out / "st_checkpoints")
    st.save(str(out / "st_model"))
    return SimpleNamespace(batches=batches, loop=loop, st_losses=st_losses, st_dir=out / "st_model",
                           reloaded=SentenceTransformer(str(out / "st_model"), device="cpu"))


# ---- what holds ---------------------------------------------------------------------------------
def test_info_nce_is_multiple_negatives_ranking_loss_at_scale_fifty():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    gen = torch.Generator().manual_seed(3)
    q, p, n = (torch.nn.functional.normalize(torch.randn(6, 8, generator=gen), dim=-1) for _ in range(3))
    recipe = MultipleNegativesRankingLoss(model=None, scale=1 / TEMPERATURE)
    ours = info_nce(q, p, n, torch.ones(6, dtype=torch.bool), TEMPERATURE)
    assert torch.allclose(recipe.compute_loss_from_embeddings([q, p, n], None), ours, atol=1e-5)
    assert torch.allclose(recipe.compute_loss_from_embeddings([q, p], None), info_nce(q, p, temperature=TEMPERATURE),
                          atol=1e-5)
    # the library default is temperature 0.05, not the recipe's 0.02: the scale must be passed
    default = MultipleNegativesRankingLoss(model=None)
    assert default.temperature == pytest.approx(0.05)
    assert not torch.allclose(default.compute_loss_from_embeddings([q, p, n], None), ours, atol=1e-2)


def test_trainer_follows_the_loop_step_by_step_once_eos_is_restored(trained):
    loop, st = torch.tensor(trained.loop.losses), torch.tensor(trained.st_losses)
    assert len(st) == STEPS and loop[0] > 1.0  # a real contrastive loss, not a collapsed one
    # same weights, batches, loss and AdamW (decay 0.1 on every LoRA matrix, linear schedule, no clipping):
    # measured max |diff| 2.5e-5 over the four steps (losses near 3; Adam turns fp32 reduction-order noise
    # into small step differences); EOS missing or the default scale differ by 0.5 to 1.9
    assert torch.allclose(loop, st, rtol=0, atol=1e-4), (loop.tolist(), st.tolist())


def test_the_saved_models_embed_alike_also_past_max_length(trained, tiny):
    ours = _adapter_embeddings(tiny, trained.loop.adapter, TEXTS)
    theirs = trained.reloaded.encode(TEXTS, convert_to_tensor=True)
    assert (ours - theirs).abs().max() < 2e-4  # measured 5.1e-5; without EOS 0.46
    features = trained.reloaded.preprocess(TEXTS)
    lengths = features["attention_mask"].sum(1).tolist()
    eos = trained.reloaded.tokenizer.eos_token_id
    last = [int(row[mask.bool()][-1]) for row, mask in zip(features["input_ids"], features["attention_mask"])]
    assert lengths[2] == MAX_LENGTH and last == [eos] * 3  # the reloaded tokenizer kept the restored EOS


def test_gradcache_loss_follows_the_loops_chunked_steps(tiny, records, tmp_path):
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    from workbench.testing.st_trainer import copy_lora

    batches = _batches(records)[:2]
    loop = _train_loop(tiny, records, batches, tmp_path / "adapter", chunk_size=4)
    st = _st_model(tiny, restore_eos=True)
    copy_lora(st, loop.start)
    cached = CachedMultipleNegativesRankingLoss(st, scale=1 / TEMPERATURE, mini_batch_size=4)
    _, st_losses = _st_train(st, records, batches, tmp_path / "st", loss=cached)
    assert torch.allclose(torch.tensor(loop.losses), torch.tensor(st_losses), rtol=0, atol=1e-4), (
        loop.losses, st_losses)


def _gather_worker(rank: int, world: int, port: int, results) -> None:
    """One rank's loss over its half of 8 (query, positive, negative) rows, gathered across ranks: first
    with negatives on both ranks, then with negatives on rank 0 only (which leaves the group broken)."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=5))
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    gen = torch.Generator().manual_seed(11)
    q, p, n = (torch.nn.functional.normalize(torch.randn(8, 16, generator=gen), dim=-1) for _ in range(3))
    part = slice(rank * 4, rank * 4 + 4)
    ours = float(info_nce(q[part], p[part], n[part], torch.ones(4, dtype=torch.bool), TEMPERATURE))
    recipe = MultipleNegativesRankingLoss(model=None, scale=1 / TEMPERATURE, gather_across_devices=True)
    both = float(recipe.compute_loss_from_embeddings([q[part], p[part], n[part]], None))
    try:
        columns = [q[part], p[part]] + ([n[part]] if rank == 0 else [])
        one: float | str = float(recipe.compute_loss_from_embeddings(columns, None))
    except RuntimeError as err:  # the collective that has no partner on the other rank
        one = type(err).__name__
    results.put((rank, ours, both, one))


def test_gather_across_two_ranks_matches_and_breaks_when_one_rank_has_no_negatives():
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_gather_worker, args=(rank, 2, port, results)) for rank in range(2)]
    for proc in procs:
        proc.start()
    got = {}
    for _ in procs:
        rank, *losses = results.get(timeout=60)
        got[rank] = losses
    for proc in procs:
        proc.join(30)
    for rank, (ours, both, _) in got.items():
        assert math.isclose(ours, both, abs_tol=1e-4), (rank, ours, both)
    # A DatasetDict split by "has a hard negative" gives each rank its own whole batch, so one rank can
    # hold a (q, p, n) batch while the other holds (q, p): their all-gathers no longer pair up. The loop
    # decides "has negatives" across ranks (loss.any_rank) and masks the rows without one.
    assert got[0][2] == "RuntimeError", got  # rank 0's third all-gather waits for a partner that never comes
    assert isinstance(got[1][2], float), got  # rank 1 went on with a loss that left out rank 0's negatives


def _zero3_worker(tiny: Path, records: dict[str, list[str]], batches, config: Path, out: Path, results) -> None:
    """The loop, then the trainer, under DeepSpeed ZeRO-3 on CPU (one gloo process), each saving its adapter.

    In its own process: after a ZeRO-3 ``Trainer`` run, transformers builds every later model
    partitioned (``from_pretrained`` under ``zero.Init``), which would break the tests after it.
    """
    import json

    os.environ.update(DS_ACCELERATOR="cpu", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(free_port()))
    torch.set_num_threads(1)
    loop = _train_loop(tiny, records, batches, out / "loop_adapter", zero3_config=config)
    from workbench.testing.st_trainer import copy_lora

    st = _st_model(tiny, restore_eos=True)
    copy_lora(st, loop.start)
    zero3 = {**json.loads(config.read_text()), "train_micro_batch_size_per_gpu": "auto",
             "gradient_accumulation_steps": "auto", "bf16": {"enabled": False}}
    trainer, st_losses = _st_train(st, records, batches, out / "st_checkpoints", deepspeed=zero3)
    trainer.save_model(str(out / "st_model"))
    results.put((loop.losses, st_losses))


@pytest.mark.slow  # DeepSpeed, like tests/test_train_deepspeed.py: about 15 s in its own process
def test_zero3_trains_alike_but_the_trainer_saves_empty_lora_partitions(tiny, records, trained, tmp_path):
    """ZeRO-3 with every parameter partitioned (persistence threshold 0: at the default 100,000 no
    tensor of the tiny model is partitioned). ``Trainer.save_model`` gathers a full state dict and
    hands it to ``_save``; ``SentenceTransformerTrainer._save`` drops it and saves the local partitions."""
    import json

    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    config = json.loads((Path(__file__).resolve().parents[1] / "workbench/train/configs/zero3.json").read_text())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    config["gradient_clipping"] = 0.0  # = train.max_grad_norm's default (DeepSpeed's own default is 1.0)
    (tmp_path / "zero3.json").write_text(json.dumps(config))
    columns = {name: records[name].to_list() for name in ("query", "positive", "negative")}
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_zero3_worker,
                       args=(tiny, columns, trained.batches, tmp_path / "zero3.json", tmp_path, results))
    proc.start()
    loop_losses, st_losses = results.get(timeout=240)
    proc.join(60)
    plain = trained.loop.losses
    assert torch.allclose(torch.tensor(loop_losses), torch.tensor(plain), rtol=0, atol=1e-4), (loop_losses, plain)
    assert torch.allclose(torch.tensor(st_losses), torch.tensor(plain), rtol=0, atol=1e-4), (st_losses, plain)
    ours = load_file(str(tmp_path / "loop_adapter" / "adapter_model.safetensors"))
    assert all(t.numel() > 0 for t in ours.values())
    assert any(float(t.abs().sum()) > 0 for name, t in ours.items() if "lora_B" in name)  # trained, not the zero init
    theirs = load_file(str(tmp_path / "st_model" / "adapter_model.safetensors"))
    assert sorted(theirs) == sorted(ours)
    assert all(t.numel() == 0 for t in theirs.values()), "SentenceTransformerTrainer saves ZeRO-3 adapters whole now"


# ---- the gaps, as they are today ----------------------------------------------------------------
def test_stock_tokenising_of_a_decoder_ends_without_eos_and_changes_the_loss(tiny, records):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    stock = _st_model(tiny, restore_eos=False, lora=False)
    features = stock.preprocess(["Tom is here.", LONG_TEXT])
    eos = stock.tokenizer.eos_token_id
    assert features["attention_mask"].sum(1).tolist()[1] == MAX_LENGTH
    last = [int(row[mask.bool()][-1]) for row, mask in zip(features["input_ids"], features["attention_mask"])]
    assert last != [eos, eos], "sentence-transformers appends EOS now"
    assert eos not in features["input_ids"][0].tolist()

    # the first step's loss (LoRA B starts at zero, so the base model's) on the loop's first batch
    queries, positives, negatives = _columns(records, _batches(records)[0])
    loaded = load_model(tiny, lora=False, gradient_checkpointing=False, max_length=MAX_LENGTH)
    with torch.no_grad():
        embedded = [loaded.embedder(**tokenize(loaded.tokenizer, texts, MAX_LENGTH, True))
                    for texts in (queries, positives, negatives)]
        ours = float(info_nce(*embedded, torch.ones(len(queries), dtype=torch.bool), TEMPERATURE))
        losses = {}
        for name, model in (("stock", stock), ("restored", _st_model(tiny, restore_eos=True, lora=False))):
            loss = MultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE)
            losses[name] = float(loss([model.preprocess(t) for t in (queries, positives, negatives)], None))
    assert abs(losses["restored"] - ours) < 1e-5, (losses, ours)
    assert abs(losses["stock"] - ours) > 0.5, (losses, ours)  # measured 5.12 against 3.31


def test_a_row_without_a_hard_negative_cannot_share_a_batch_with_rows_that_have_one(tiny):
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
    from sentence_transformers.sentence_transformer.modules import Transformer

    module = Transformer(str(tiny), max_seq_length=MAX_LENGTH)
    collate = SentenceTransformerDataCollator(preprocess_fn=module.preprocess)
    rows = [{"anchor": "q1", "positive": "p1", "negative": "n1"}, {"anchor": "q2", "positive": "p2", "negative": None}]
    with pytest.raises(ValueError, match="NoneType"):
        collate(rows)
    # the loop keeps such a row and masks its missing negative out of the candidates
    gen = torch.Generator().manual_seed(5)
    q, p, n = (torch.nn.functional.normalize(torch.randn(2, 8, generator=gen), dim=-1) for _ in range(3))
    masked = info_nce(q, p, n, torch.tensor([True, False]), TEMPERATURE)
    by_hand = torch.nn.functional.cross_entropy((q @ torch.cat([p, n[:1]]).T) / TEMPERATURE, torch.arange(2))
    assert torch.allclose(masked, by_hand, atol=1e-5)


def test_both_samplers_keep_apart_texts_that_would_be_a_positive_and_a_negative_in_one_batch(records):
    """The test data's hard negative is the next record's positive: in one batch that text would be one
    query's positive and another's negative. ``BatchSamplers.NO_DUPLICATES`` compares texts; the loop's
    sampler does too (before it compared records only, and its first 4 batches held 10 such texts)."""
    import datasets
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    def repeated(batch: list[int]) -> int:
        texts = [text for i in batch for text in (records["query"][i], records["positive"][i], records["negative"][i])]
        return len(texts) - len(set(texts))

    chained = sum(records["positive"].is_in(records["negative"].to_list()))
    assert chained > 10  # the data does hold such texts
    assert all(repeated(batch) == 0 for batch in _batches(records))
    dataset = datasets.Dataset.from_dict({name: records[column].to_list() for name, column in
                                          (("anchor", "query"), ("positive", "positive"), ("negative", "negative"))})
    generator = torch.Generator().manual_seed(SEED)
    sampler = NoDuplicatesBatchSampler(dataset, batch_size=BATCH, drop_last=False, generator=generator, seed=SEED)
    assert all(repeated(batch) == 0 for batch in sampler)


def test_eval_reads_a_trainer_folder_without_the_contract_and_adds_a_second_eos(trained):
    from workbench.eval.encoders import WorkbenchEncoder

    assert not (trained.st_dir / CONTRACT_FILE).exists()
    spec = load_spec(trained.st_dir)
    assert (spec.source, spec.query_template, spec.add_eos) == ("none", None, True)
    encoder = WorkbenchEncoder(trained.st_dir, cache_root=None, show_progress=False)
    batch = tokenize(encoder.backend.tokenizer, ["Tom is here."], MAX_LENGTH, encoder.backend.add_eos)
    eos = encoder.backend.tokenizer.eos_token_id
    assert batch["input_ids"][0].tolist()[-2:] == [eos, eos]  # the tokenizer's EOS, then the contract's
    drift = torch.tensor(encoder.backend.encode(TEXTS, 8)) - trained.reloaded.encode(TEXTS, convert_to_tensor=True)
    assert drift.abs().max() > 1e-3  # measured 0.049: eval would not see the model that was trained
