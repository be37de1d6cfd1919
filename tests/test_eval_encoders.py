"""Encoders: MiniLM through our wrapper equals sentence-transformers; the saved-model contract
(last-token pooling, query template, plain documents) on a tiny random decoder; the embedding cache
(no re-encoding, resume after an interruption); clear errors for models that cannot load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mteb.types import PromptType

from workbench.encoder import load_spec, minilm_path, task_instructions
from workbench.errors import WorkbenchError
from workbench.eval.encoders import WorkbenchEncoder

TEXTS = [
    "Where is the Eiffel tower?",
    "Ìlú Èkó ni ìlú tó tóbi jù ní Nàìjíríà.",
    "北京是中国的首都。",
    "A much longer passage about the history of a city, its rivers, its bridges and the people who lived there.",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "short",
]
TEMPLATE = "Instruct: {instruction}\nQuery: {text}"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _loader(texts: list[str], batch: int = 2) -> list[dict[str, list[str]]]:
    return [{"text": texts[i : i + batch]} for i in range(0, len(texts), batch)]


def test_minilm_wrapper_equals_sentence_transformers(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    encoder = WorkbenchEncoder(minilm_path(), cache_root=tmp_path / "emb", batch_size=4, show_progress=False)
    ours = encoder.encode_texts(TEXTS)
    direct = SentenceTransformer(str(minilm_path()), device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert ours.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(ours, direct, atol=1e-5)
    # MiniLM has no query template: queries go in plain, the instruction table is not applied
    meta = SimpleNamespace(name="MIRACLRetrieval")
    as_query = encoder.encode(_loader(TEXTS), task_metadata=meta, hf_split="dev", hf_subset="yo", prompt_type=PromptType.query)
    np.testing.assert_allclose(as_query, direct, atol=1e-5)


def test_cache_skips_reencoding_and_resumes(tmp_path: Path) -> None:
    encoder = WorkbenchEncoder(
        minilm_path(), cache_root=tmp_path / "emb", batch_size=2, chunk_size=2, flush_every=2, show_progress=False
    )
    real = encoder.backend.encode
    calls: list[int] = []

    def failing(texts, batch_size):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted after the first chunk was written
        return real(texts, batch_size)

    encoder.backend.encode = failing
    with pytest.raises(KeyboardInterrupt):
        encoder.encode_texts(TEXTS)
    assert len(list((tmp_path / "emb").rglob("part-*.npz"))) == 1

    fresh = WorkbenchEncoder(minilm_path(), cache_root=tmp_path / "emb", batch_size=2, show_progress=False)
    encoded: list[str] = []
    fresh_real = fresh.backend.encode
    fresh.backend.encode = lambda texts, bs: (encoded.extend(texts), fresh_real(texts, bs))[1]
    first = fresh.encode_texts(TEXTS)
    assert len(encoded) == len(TEXTS) - 2  # resumed: the two cached texts were not encoded again
    encoded.clear()
    second = fresh.encode_texts(list(reversed(TEXTS)))  # a second task over the same texts
    assert encoded == []
    np.testing.assert_allclose(second, first[::-1], atol=1e-6)


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama exported with the saved-model contract (tokenizer borrowed from MiniLM)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    folder = tmp_path_factory.mktemp("tiny-decoder")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    tokenizer.eos_token = "[SEP]"
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
    )
    with torch.random.fork_rng():
        torch.manual_seed(7)
        model = LlamaModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    contract = {
        "format": "hf", "base_model": "tiny-random-llama", "pooling": "last_token", "normalize": True,
        "max_length": 128, "query_template": TEMPLATE, "add_eos": True, "padding_side": "left",
        "trained_on": "test", "steps": 0,
    }
    (folder / "workbench_encoder.json").write_text(json.dumps(contract), encoding="utf-8")
    return folder


def _manual_last_token(folder: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    out = []
    for text in texts:  # one at a time: no padding, so the last position is the EOS token
        batch = tokenizer(text + "[SEP]", return_tensors="pt", truncation=True, max_length=128)
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state[0, -1]
        out.append(torch.nn.functional.normalize(hidden, dim=-1).numpy())
    return np.stack(out)


def test_saved_model_contract_queries_get_template_documents_plain(tiny_decoder: Path, tmp_path: Path) -> None:
    spec = load_spec(tiny_decoder)
    assert (spec.format, spec.pooling, spec.padding_side, spec.add_eos) == ("hf", "last_token", "left", True)
    encoder = WorkbenchEncoder(tiny_decoder, cache_root=tmp_path / "emb", batch_size=4, show_progress=False)
    meta = SimpleNamespace(name="MIRACLRetrieval")
    queries = encoder.encode(_loader(TEXTS), task_metadata=meta, hf_split="dev", hf_subset="yo", prompt_type=PromptType.query)
    docs = encoder.encode(_loader(TEXTS), task_metadata=meta, hf_split="dev", hf_subset="yo", prompt_type=PromptType.document)
    instruction = task_instructions()["MIRACLRetrieval"]
    assert instruction == "Given a question, retrieve Wikipedia passages that answer the question"
    expected_queries = _manual_last_token(tiny_decoder, [TEMPLATE.format(instruction=instruction, text=t) for t in TEXTS])
    expected_docs = _manual_last_token(tiny_decoder, TEXTS)
    np.testing.assert_allclose(queries, expected_queries, atol=1e-4)  # batched, left-padded == one by one
    np.testing.assert_allclose(docs, expected_docs, atol=1e-4)
    assert not np.allclose(queries, docs, atol=1e-3)
    # same texts, two instructions: two cache folders, keyed by (fingerprint, text hash, instruction)
    folders = {p.parent.name for p in (tmp_path / "emb").rglob("part-*.npz")}
    assert len(folders) == 2 and "plain" in folders


def test_models_that_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="model folder not found"):
        WorkbenchEncoder(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WorkbenchError, match="not a model folder"):
        WorkbenchEncoder(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(WorkbenchError, match=r"cannot load the model"):
        WorkbenchEncoder(broken)
    bad_contract = tmp_path / "bad"
    shutil.copytree(minilm_path(), bad_contract)
    (bad_contract / "workbench_encoder.json").write_text('{"format": "onnx"}')
    with pytest.raises(WorkbenchError, match="field 'format' is 'onnx'"):
        WorkbenchEncoder(bad_contract)


def test_bitext_mining_gets_the_instruction_on_both_sides(tiny_decoder: Path, tmp_path: Path) -> None:
    """Tatoeba is symmetric: mteb encodes both sides with no prompt type; both get the template."""
    import mteb

    encoder = WorkbenchEncoder(tiny_decoder, cache_root=tmp_path / "emb", batch_size=4, show_progress=False)
    meta = mteb.get_task("Tatoeba").metadata
    assert task_instructions()["Tatoeba"] == "Retrieve parallel sentences."
    vectors = encoder.encode(_loader(TEXTS), task_metadata=meta, hf_split="test", hf_subset="amh-eng", prompt_type=None)
    expected = _manual_last_token(tiny_decoder, [TEMPLATE.format(instruction="Retrieve parallel sentences.", text=t) for t in TEXTS])
    np.testing.assert_allclose(vectors, expected, atol=1e-4)


def test_base_under_the_trained_contract_runs_exactly_as_the_trained_model(tmp_path: Path) -> None:
    """base@trained-contract: the base weights with the fine-tuned export's template, max_length and pooling,
    so trained minus it differs only in the weights (the base as it ships runs plain at 256 tokens)."""
    from sentence_transformers import SentenceTransformer

    from workbench.encoder import write_spec
    from workbench.eval.encoders import borrowed_spec

    trained = tmp_path / "trained"  # an export's contract (its weights do not matter here)
    shutil.copytree(minilm_path(), trained)
    contract = load_spec(trained)
    write_spec(trained, contract.__class__(path="", format="sentence-transformers", pooling="mean", max_length=16,
                                           query_template=TEMPLATE), trained_on="test", seed=13)
    meta = SimpleNamespace(name="MIRACLRetrieval")
    base = WorkbenchEncoder(minilm_path(), show_progress=False)
    under = WorkbenchEncoder(minilm_path(), contract_from=trained, show_progress=False)
    assert (base.max_length, under.max_length) == (256, 16)
    assert base.instruction_for(meta) == ("none", "none")
    instruction = task_instructions()["MIRACLRetrieval"]
    assert under.instruction_for(meta) == (instruction, "instruction table")
    spec = borrowed_spec(minilm_path(), trained)
    assert spec.path == str(minilm_path()) and spec.query_template == TEMPLATE and spec.base_model is None
    long_query = "Where is the Eiffel tower and who built it and when was it finished and why is it so tall"
    got = under.encode(_loader([long_query]), task_metadata=meta, hf_split="dev", hf_subset="en",
                       prompt_type=PromptType.query)
    reference = SentenceTransformer(str(minilm_path()), device="cpu")
    reference.max_seq_length = 16
    want = reference.encode([TEMPLATE.format(instruction=instruction, text=long_query)], normalize_embeddings=True)
    np.testing.assert_allclose(got, want, atol=1e-5)
    plain = base.encode(_loader([long_query]), task_metadata=meta, hf_split="dev", hf_subset="en",
                        prompt_type=PromptType.query)
    assert not np.allclose(got, plain, atol=1e-3)
    with pytest.raises(WorkbenchError, match="no workbench_encoder.json to borrow"):
        WorkbenchEncoder(minilm_path(), contract_from=minilm_path())


def test_decoder_without_an_instruction_warns_once_naming_the_fix(tiny_decoder: Path, tmp_path: Path, caplog) -> None:
    """A decoder under a folder name no preset matches, with prompts for no task: its queries would lose the
    instruction silently. One warning line per task names the fix; the results record instruction 'none'."""
    folder = tmp_path / "my-renamed-model"
    shutil.copytree(tiny_decoder, folder)
    (folder / "workbench_encoder.json").unlink()
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"web_search_query": "Q: "}}))
    encoder = WorkbenchEncoder(folder, show_progress=False)
    meta = SimpleNamespace(name="MIRACLRetrieval")
    with caplog.at_level("WARNING", logger="workbench.eval.encoders"):
        assert encoder.instruction_for(meta) == ("none", "none")
        encoder.encode(_loader(TEXTS[:2]), task_metadata=meta, hf_split="dev", hf_subset="yo", prompt_type=PromptType.query)
    lines = [r.getMessage() for r in caplog.records if "is a decoder with no instruction for MIRACLRetrieval" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0].replace("\\n", "")
    assert "fix: add workbench_encoder.json" in lines[0] and "e5-mistral" in lines[0]
    # an encoder with no instruction is not warned about (MiniLM is meant to run plain)
    caplog.clear()
    with caplog.at_level("WARNING", logger="workbench.eval.encoders"):
        WorkbenchEncoder(minilm_path(), show_progress=False).instruction_for(meta)
    assert not [r for r in caplog.records if "is a decoder" in r.getMessage()]
