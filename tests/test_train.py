"""Train stage, fast parts: records per family, sampling, pooling, InfoNCE, estimator, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest
import torch

from workbench.config import TrainSection
from workbench.encoder import inspect_model, last_token_pool, tokenize
from workbench.errors import ConfigError, WorkbenchError
from workbench.run import Run
from workbench.tables import ACCEPTED
from workbench.train import data as train_data
from workbench.train.loss import info_nce
from workbench.train.model import load_model
from workbench.train.stage import run_train
from workbench.train.zero import check_fits, deepspeed_config, estimate_memory

from train_support import accepted_run, tiny_model, train_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "mistral", shared_data)


def _accepted(rows: list[dict]) -> dict[str, pl.DataFrame]:
    return {"xx": pl.DataFrame(rows)}


def test_records_follow_the_paper_mapping_per_family():
    rows = [
        {"slot_id": "1", "language": "sw", "family": "short_long", "task": "Find recipes",
         "user_query": "ugali", "positive_document": "Ugali ni chakula", "hard_negative_document": "Wali"},
        {"slot_id": "2", "language": "sw", "family": "long_short", "task": "Classify sentiment",
         "input_text": "Nimefurahi sana", "label": "positive", "misleading_label": "negative"},
        {"slot_id": "3", "language": "sw", "family": "short_short", "task": "Match titles",
         "input": "Habari", "positive_document": "Habari za leo"},
        {"slot_id": "4", "language": "sw", "family": "sts", "task": None, "S1": "a", "S2": "b", "S3": "c"},
        {"slot_id": "5", "language": "sw", "family": "bitext", "task": "", "S1": "x", "S2": "y", "S3": "z"},
    ]
    built = train_data.build_records(_accepted(rows), TrainSection())
    rec = {r["slot_id"]: r for r in built.records.iter_rows(named=True)}
    assert rec["1"]["query"] == "Instruct: Find recipes\nQuery: ugali"
    assert (rec["1"]["positive"], rec["1"]["negative"]) == ("Ugali ni chakula", "Wali")
    assert (rec["2"]["query"], rec["2"]["positive"], rec["2"]["negative"]) == (
        "Instruct: Classify sentiment\nQuery: Nimefurahi sana", "positive", "negative")
    assert rec["3"]["negative"] is None and rec["3"]["symmetric"] is False
    # symmetric families: instruction on the query only (paper §3.2), default instruction when no task
    assert rec["4"]["query"] == "Instruct: Retrieve semantically similar text.\nQuery: a"
    assert (rec["4"]["positive"], rec["4"]["negative"]) == ("b", "c")
    assert rec["5"]["query"] == "Instruct: Retrieve parallel sentences.\nQuery: x"
    assert rec["5"]["symmetric"] is True
    assert built.skipped == {}
    assert built.without_negative == {}


def test_rows_missing_fields_are_counted_not_silently_dropped():
    rows = [
        {"slot_id": "1", "language": "de", "family": "short_long", "task": "T", "user_query": "q",
         "positive_document": "  ", "hard_negative_document": "n"},
        {"slot_id": "2", "language": "de", "family": "short_long", "task": "T", "user_query": "q",
         "positive_document": "p", "hard_negative_document": None},
        {"slot_id": "3", "language": "de", "family": "short_long", "task": None, "user_query": "q",
         "positive_document": "p", "hard_negative_document": "n"},
    ]
    built = train_data.build_records(_accepted(rows), TrainSection())
    assert built.records["slot_id"].to_list() == ["2"]
    assert built.skipped == {"short_long: empty positive_document": 1, "short_long: empty task (instruction)": 1}
    assert built.without_negative == {"short_long: empty hard_negative_document": 1}


def test_weights_and_one_task_per_batch_sampling():
    rows = [
        {"slot_id": f"{lang}{fam}{i}", "language": lang, "family": fam, "task": "T",
         "input": f"q{i}", "positive_document": f"p{i}", "user_query": f"q{i}", "hard_negative_document": "n"}
        for lang in ("en", "yo") for fam in ("short_short", "short_long") for i in range(20)
    ]
    config = TrainSection(language_weights={"yo": 3.0}, family_weights={"short_long": 0.0})
    records = train_data.build_records(_accepted(rows), config).records
    weights = {(r["language"], r["family"]): r["weight"] for r in records.iter_rows(named=True)}
    assert weights == {("en", "short_short"): 1.0, ("en", "short_long"): 0.0,
                       ("yo", "short_short"): 3.0, ("yo", "short_long"): 0.0}
    sampler = train_data.BatchSampler(records, 8, random.Random(1), one_task_per_batch=True)
    langs = records["language"].to_list()
    fams = records["family"].to_list()
    seen = []
    for _ in range(40):
        batch = next(sampler)
        groups = {(langs[i], fams[i]) for i in batch}
        assert len(groups) == 1 and len(batch) == 8
        seen.append(groups.pop())
    assert all(fam == "short_short" for _, fam in seen)  # weight 0 never sampled
    assert 20 < sum(lang == "yo" for lang, _ in seen) < 40  # yo 3x en
    mixed = train_data.BatchSampler(records, 10, random.Random(1))
    first_epoch = [i for _ in range(4) for i in next(mixed)]
    assert len(set(first_epoch)) == 40  # without replacement within an epoch: every usable row once


def test_records_export_as_parquet_and_hf_dataset(tmp_path, shared_data):
    run = accepted_run(tmp_path / "run", shared_data, n=30)
    built = train_data.build_records(train_data.read_accepted(run), TrainSection())
    folder = train_data.save_hf_dataset(built.records, tmp_path / "hf")
    import datasets

    loaded = datasets.load_from_disk(str(folder))
    assert loaded.num_rows == 30 and loaded[0]["query"] == built.records["query"][0]
    assert loaded.column_names == built.records.columns


def test_no_accepted_data_is_one_clear_error(tmp_path, tiny):
    run = Run.create(tmp_path / "run")
    with pytest.raises(WorkbenchError, match="no accepted data"):
        run_train(run, train_config(tiny), None)
    (run.root / "accepted").mkdir()
    run.write_table("accepted", "en", pl.DataFrame(schema=ACCEPTED), ACCEPTED)
    with pytest.raises(WorkbenchError, match="all empty"):
        run_train(run, train_config(tiny), None)


def test_unknown_model_path_is_one_clear_error(tmp_path, shared_data):
    run = accepted_run(tmp_path / "run", shared_data, n=10)
    with pytest.raises(WorkbenchError, match="model folder not found") as err:
        run_train(run, train_config(tmp_path / "nope"), None)
    assert str(tmp_path / "nope") in err.value.line()
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="no config.json"):
        run_train(run, train_config(tmp_path / "empty"), None)


def test_bad_deepspeed_config_is_one_clear_error(tmp_path, tiny):
    bad = tmp_path / "ds.json"
    bad.write_text("{\"zero_optimization\": {\"stage\": 3,}")
    tc = TrainSection(model=str(tiny), deepspeed="zero3", deepspeed_config=str(bad))
    with pytest.raises(ConfigError, match="not valid JSON") as err:
        deepspeed_config(tc, micro_batch=1, grad_accum=1, world_size=1, bf16=False)
    assert str(bad) in err.value.line()
    bad.write_text(json.dumps({"zero_optimization": {"stage": 5}}))
    with pytest.raises(ConfigError, match="zero_optimization.stage"):
        deepspeed_config(tc, micro_batch=1, grad_accum=1, world_size=1, bf16=False)
    bad.write_text(json.dumps({"zero_optimization": {"stage": 2}, "optimizer": {"type": "Adam"}}))
    with pytest.raises(ConfigError, match="optimizer"):
        deepspeed_config(tc, micro_batch=1, grad_accum=1, world_size=1, bf16=False)
    # clipping is train.max_grad_norm's, on both paths: a custom file may only repeat it
    bad.write_text(json.dumps({"zero_optimization": {"stage": 2}, "gradient_clipping": 1.0}))
    with pytest.raises(ConfigError, match="gradient_clipping.*train.max_grad_norm is 0"):
        deepspeed_config(tc, micro_batch=1, grad_accum=1, world_size=1, bf16=False)
    same = tc.model_copy(update={"max_grad_norm": 1.0})
    assert deepspeed_config(same, micro_batch=1, grad_accum=1, world_size=1, bf16=False)["gradient_clipping"] == 1.0
    bundled = TrainSection(model=str(tiny), deepspeed="zero2", max_grad_norm=0.5)
    assert deepspeed_config(bundled, micro_batch=1, grad_accum=1, world_size=1, bf16=False)["gradient_clipping"] == 0.5
    assert deepspeed_config(TrainSection(model=str(tiny), deepspeed="zero3"), micro_batch=1, grad_accum=1,
                            world_size=1, bf16=False)["gradient_clipping"] == 0.0  # not DeepSpeed's default 1.0


@pytest.mark.parametrize("side", ["left", "right"])
def test_eos_pooling_picks_the_last_real_token_under_both_paddings(tiny, side):
    loaded = load_model(tiny, lora=False, gradient_checkpointing=False)
    tok = loaded.tokenizer
    tok.padding_side = side
    texts = ["Tom is here.", "I think that this sentence is much longer than the first one."]
    batch = tokenize(tok, texts, 64, add_eos=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lengths = mask.sum(1).tolist()
    assert lengths[0] < lengths[1]  # padding really happened
    for row, length in zip(range(2), lengths):
        real = ids[row][mask[row].bool()]
        assert real[-1].item() == tok.eos_token_id  # EOS appended
        assert real[0].item() == tok.bos_token_id
    # pooled vector == hidden state at the EOS position == embedding of the unpadded text alone
    loaded.embedder.eval()
    with torch.no_grad():
        padded = loaded.embedder(ids, mask)
        for row, text in enumerate(texts):
            alone = tokenize(tok, [text], 64, add_eos=True)
            single = loaded.embedder(alone["input_ids"], alone["attention_mask"])
            assert torch.allclose(padded[row], single[0], atol=1e-5)
    hidden = torch.arange(2 * ids.shape[1]).reshape(2, ids.shape[1], 1).float()
    picked = last_token_pool(hidden, mask).squeeze(-1).long().tolist()
    expected = [r * ids.shape[1] + (ids.shape[1] - 1 if side == "left" else lengths[r] - 1) for r in range(2)]
    assert picked == expected


def test_info_nce_matches_the_written_out_formula():
    gen = torch.Generator().manual_seed(3)
    q, p, n = (torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=-1) for _ in range(3))
    mask = torch.tensor([True, False, True, True])
    loss = info_nce(q, p, n, mask, temperature=0.02)
    manual = 0.0
    for i in range(4):
        scores = [q[i] @ p[j] / 0.02 for j in range(4)] + [q[i] @ n[j] / 0.02 for j in range(4) if mask[j]]
        manual += -(scores[i] - torch.logsumexp(torch.stack(scores), 0))
    assert torch.allclose(loss, manual / 4, atol=1e-5)
    # without hard negatives: in-batch only
    in_batch = info_nce(q, p, temperature=0.02)
    expected = torch.nn.functional.cross_entropy(q @ p.T / 0.02, torch.arange(4))
    assert torch.allclose(in_batch, expected, atol=1e-5)


def _seven_b(folder: Path) -> Path:
    from transformers import MistralConfig

    folder.mkdir(parents=True, exist_ok=True)
    config = MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=8)
    config.architectures = ["MistralForCausalLM"]
    config.save_pretrained(str(folder))
    return folder


def test_estimator_counts_mistral_7b_and_refuses_what_cannot_fit(tmp_path):
    info = inspect_model(_seven_b(tmp_path / "m7b"))
    fits = TrainSection(model=str(info.path), deepspeed="zero3", batch_size=32, max_length=512)
    estimate = estimate_memory(fits, info, world_size=1)
    assert 7.0e9 < estimate.total_params < 7.5e9
    assert 40e6 < estimate.trainable_params < 43e6  # LoRA r16 on all linear layers of Mistral-7B: 41.9M
    assert 13.0 < estimate.frozen_bytes / 2**30 < 14.5
    check_fits(estimate, fits)
    huge = fits.model_copy(update={"batch_size": 2048})
    with pytest.raises(WorkbenchError, match="cannot fit") as err:
        check_fits(estimate_memory(huge, info, world_size=1), huge)
    assert "chunk_size" in err.value.line()
    chunked = huge.model_copy(update={"chunk_size": 16})
    check_fits(estimate_memory(chunked, info, world_size=8), chunked)


def test_train_config_rejects_unknown_family_weight():
    with pytest.raises(ConfigError, match="train.family_weights"):
        from workbench.config import parse_config

        parse_config({"train": {"family_weights": {"retrieval": 1.0}}}, where="run.toml")


def _records(n_by_group: dict[tuple[str, str], int]) -> pl.DataFrame:
    rows = [
        {"slot_id": f"{lang}{fam}{i}", "language": lang, "family": fam, "task": "T",
         "input": f"q{i}", "positive_document": f"p{i}"}
        for (lang, fam), n in n_by_group.items() for i in range(n)
    ]
    return train_data.build_records(_accepted(rows), TrainSection()).records


def test_no_record_twice_in_a_batch_across_epochs_and_in_small_groups(caplog):
    records = _records({("en", "short_short"): 7})
    mixed = train_data.BatchSampler(records, 3, random.Random(2))
    batches = [next(mixed) for _ in range(40)]  # 7 records, batches of 3: most batches straddle an epoch
    assert all(len(b) == 3 and len(set(b)) == 3 for b in batches)
    counts = [sum(i in b for b in batches) for i in range(7)]
    assert max(counts) - min(counts) <= 2  # still without replacement: every record as often as the others
    grouped = _records({("en", "short_short"): 5, ("de", "short_short"): 20})
    with caplog.at_level("WARNING", logger="workbench.train.data"):
        sampler = train_data.BatchSampler(grouped, 8, random.Random(3), one_task_per_batch=True, multiple_of=2)
    assert "fewer records than batch_size 8" in caplog.text and "en/short_short" in caplog.text
    sizes = set()
    for _ in range(30):
        batch = next(sampler)
        assert len(set(batch)) == len(batch)
        sizes.add(len(batch))
    assert sizes == {4, 8}  # the 5-record group gives batches of 4 (a multiple of 2 processes)


def test_schedule_is_one_epoch_by_default_steps_override_and_the_batch_shrinks():
    from workbench.train.schedule import plan_schedule

    default = plan_schedule(TrainSection(), 93_000)
    assert (default.batch_size, default.steps, default.from_steps) == (2048, 46, False)  # ceil(93000 / 2048)
    assert 1.0 <= default.epochs < 1.03 and default.warnings == []
    explicit = plan_schedule(TrainSection(steps=1000), 93_000)
    assert explicit.steps == 1000 and explicit.from_steps and explicit.epochs > 20
    assert "tiny training set" in explicit.warnings[0]
    tiny_data = plan_schedule(TrainSection(batch_size=8), _records({("en", "short_short"): 7}), world_size=2)
    assert (tiny_data.batch_size, tiny_data.steps) == (6, 2)
    assert "shrinks to 6" in tiny_data.warnings[0]
    assert plan_schedule(TrainSection(batch_size=8, epochs=3), 7).steps == 3
    with pytest.raises(WorkbenchError, match="cannot fill one batch"):
        plan_schedule(TrainSection(batch_size=8), 1, world_size=2)


def test_estimate_shows_the_schedule(tmp_path, tiny, shared_data):
    from typer.testing import CliRunner

    from workbench.cli import app

    run = accepted_run(tmp_path / "run", shared_data, n=30)
    result = CliRunner().invoke(app, ["train", str(run.root), "--model", str(tiny), "--deepspeed", "none",
                                      "--estimate", "--batch-size", "16", "--max-length", "32"])
    assert result.exit_code == 0, result.output
    assert "training schedule" in result.output and "2 (from train.epochs)" in result.output
    assert "1.07" in result.output  # 2 steps x 16 = 32 draws over 30 records
    again = CliRunner().invoke(app, ["train", str(run.root), "--model", str(tiny), "--deepspeed", "none",
                                     "--estimate", "--batch-size", "16", "--max-length", "32", "--epochs", "3"])
    assert again.exit_code == 0 and "6 (from train.epochs)" in again.output, again.output


def _chain_records(n: int, negative=lambda i: f"p{i + 1}") -> pl.DataFrame:
    """Records whose hard negative is (by default) the next record's positive."""
    return pl.DataFrame({"query": [f"q{i}" for i in range(n)], "positive": [f"p{i}" for i in range(n)],
                         "negative": [negative(i) for i in range(n)], "language": ["en"] * n,
                         "family": ["short_long"] * n, "weight": [1.0] * n})


def test_no_text_twice_in_a_batch_while_distinct_records_can_fill_it():
    records = _chain_records(32)
    sampler = train_data.BatchSampler(records, 8, random.Random(4))
    texts = [{records[c][i] for c in ("query", "positive", "negative")} for i in range(records.height)]
    for _ in range(40):  # ten epochs
        batch = next(sampler)
        assert len(batch) == 8 and len(set(batch)) == 8
        held = [t for i in batch for t in texts[i]]
        assert len(held) == len(set(held)), batch  # p(i+1) is never both a positive and a negative here
    assert sampler.repeated_text_batches == 0
    # every record still drawn about as often as the others
    counts = pl.Series([i for _ in range(40) for i in next(sampler)]).value_counts()
    assert counts["count"].max() - counts["count"].min() <= 4


def test_batches_that_cannot_avoid_a_repeated_text_are_filled_and_counted():
    records = _chain_records(12, negative=lambda i: "the same label")  # every record shares its negative
    sampler = train_data.BatchSampler(records, 4, random.Random(5))
    batches = [next(sampler) for _ in range(6)]
    assert all(len(b) == 4 and len(set(b)) == 4 for b in batches)  # full, no record twice
    assert sampler.repeated_text_batches == 6


def _labelled_records(distinct: int, labelled: int, labels: int) -> pl.DataFrame:
    """``distinct`` records with texts of their own, then ``labelled`` whose positive is one of ``labels``
    class labels (classification data: the label repeats across records)."""
    n = distinct + labelled
    positives = [f"p{i}" for i in range(distinct)] + [f"label {i % labels}" for i in range(labelled)]
    return pl.DataFrame({"query": [f"q{i}" for i in range(n)], "positive": positives, "negative": [None] * n,
                         "language": ["en"] * n, "family": ["long_short"] * n, "weight": [1.0] * n})


def test_one_epoch_of_steps_still_draws_records_with_a_common_label_about_once():
    records = _labelled_records(800, 200, labels=2)  # a batch of 20 wants 4 labelled records; 2 keep texts apart
    sampler = train_data.BatchSampler(records, 20, random.Random(0))
    drawn = pl.Series([i for _ in range(50) for i in next(sampler)]).value_counts()  # one epoch of steps
    never = records.height - drawn.height
    # a record held back for its label waits a few batches, not until other records were drawn twice:
    # looking a whole epoch ahead left 100 of the 200 labelled records undrawn (and 100 others drawn twice)
    assert never <= (1 + train_data.LOOKAHEAD_BATCHES) * 20, never
    assert drawn["count"].max() <= 2
    assert sampler.repeated_text_batches > 0  # the labels could not be kept apart, and that is counted


def test_batches_stay_full_when_records_held_back_for_their_labels_pile_up():
    records = _labelled_records(0, 4, labels=3)  # "label 0" twice: those two never share a batch of 3 willingly
    for seed in range(5):
        sampler = train_data.BatchSampler(records, 3, random.Random(seed))
        for _ in range(100):
            batch = next(sampler)
            assert len(batch) == 3 and len(set(batch)) == 3, (seed, batch)  # copies of one record once filled the queue


def test_the_sampler_keeps_no_second_copy_of_the_texts():
    import tracemalloc

    body = "word " * 2_000  # 10,000 characters a document
    records = _chain_records(2_000).with_columns(pl.col("positive") + body, pl.col("negative") + body)
    tracemalloc.start()
    try:
        sampler = train_data.BatchSampler(records, 8, random.Random(6))
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < 4_000_000, kept  # the documents alone are 40 MB; the texts are compared by digest
    assert len(next(sampler)) == 8


def test_plain_torch_clips_once_per_step_after_all_gradcache_chunks(tmp_path, tiny, shared_data):
    losses = {}
    for norm, chunk in ((0.0, 0), (0.05, 0), (0.05, 4)):
        run = accepted_run(tmp_path / f"n{norm}c{chunk}", shared_data, n=64)
        run_train(run, train_config(tiny, deepspeed="none", steps=3, chunk_size=chunk, lora_dropout=0.0,
                                    max_grad_norm=norm), None)
        losses[norm, chunk] = torch.tensor(pl.read_parquet(run.root / "train" / "log.parquet")["loss"].to_list())
    # clipping at 0.05 moves the third step by about 3e-3 (so the comparison below can see a clip per chunk)
    assert (losses[0.0, 0] - losses[0.05, 0]).abs().max() > 1e-3, losses
    # the chunks' gradients add up to the whole batch's before the one clip and step
    assert torch.allclose(losses[0.05, 0], losses[0.05, 4], rtol=1e-5, atol=1e-5), losses


def test_unknown_deepspeed_mode_is_one_line_naming_the_option_and_the_config_modes(tmp_path):
    """The CLI names --deepspeed (not run.toml) and lists the modes the config declares, before any run exists."""
    from typing import get_args

    from typer.testing import CliRunner

    from workbench.cli import app
    from workbench.config import DeepSpeedMode

    result = CliRunner().invoke(app, ["train", str(tmp_path / "run"), "--deepspeed", "zero9"])
    assert isinstance(result.exception, WorkbenchError)  # the CLI's main prints it as one error: line, exit 2
    line = str(result.exception)
    assert "--deepspeed" in line and "unknown DeepSpeed mode 'zero9'" in line and "\n" not in line
    assert ", ".join(get_args(DeepSpeedMode)) in line and not (tmp_path / "run").exists()
