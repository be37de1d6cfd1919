"""`workbench export`: accepted data as JSONL + a dataset card whose every config `datasets` loads;
Hub upload to a local fake.

The run is real pipeline output: plan, generate against the OpenAI test double (real Tatoeba
sentences; Somali has no Tatoeba file, so its answers come back in English and the filter rejects
them all) and the real filter. The Hub is a small HTTP server on 127.0.0.1 that speaks the three
endpoints huggingface_hub's upload uses (create repo, preupload, commit). No other host is contacted.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest

from workbench import conditions
from workbench.config import RunConfig, parse_config
from workbench.filter.stage import run_filter
from workbench.languages import load_registry
from workbench.pipeline import run_pipeline
from workbench.run import Run
from workbench.tables import ACCEPTED, EVAL_RESULTS, REJECTED
from workbench.testing.openai_double import OpenAIDouble

from cli_support import workbench
from conftest import REPO
from filter_fixtures import make_run

LANGUAGES = ("sw", "de", "so")  # so: no accepted rows (see the module docstring)


@pytest.fixture(scope="module")
def filtered_run(tmp_path_factory, shared_data):
    registry = load_registry()
    with OpenAIDouble(shared_data, deterministic=True) as double:
        config = parse_config({
            "run": {"name": "export-test", "languages": list(LANGUAGES), "quota": 12, "seed": 3},
            "generate": {"base_url": double.base_url, "model": "double", "timeout_s": 5.0,
                         "backoff_base_s": 0.01, "backoff_max_s": 0.05},
            "pipeline": {"stages": ["plan", "generate", "filter"]},
        }, where="test")
        run = Run.create(tmp_path_factory.mktemp("run") / "r")
        (run.root / "run.toml").write_text(config.to_toml())
        run_pipeline(run, config, registry)
    return run


class FakeHub:
    """Records what huggingface_hub uploads: repos created and the files of each commit."""

    def __init__(self, status: int = 200):
        self.status = status
        self.repos: list[dict] = []
        self.files: dict[str, dict[str, bytes]] = {}
        self.headers: list[dict[str, str]] = []
        self.validated: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.headers.append(dict(self.headers))
                if hub.status != 200:
                    return self._json({"error": "Invalid credentials in Authorization header"}, hub.status)
                parts = self.path.split("?")[0].strip("/").split("/")
                if self.path.startswith("/api/repos/create"):
                    payload = json.loads(body)
                    hub.repos.append(payload)
                    kind = "" if payload.get("type") in (None, "model") else payload["type"] + "s/"
                    return self._json({"url": f"{hub.url}/{kind}{payload['organization']}/{payload['name']}"})
                if self.path.startswith("/api/validate-yaml"):  # the card's YAML header, checked before upload
                    hub.validated.append(json.loads(body))
                    return self._json({"errors": [], "warnings": []})
                repo = "/".join(parts[2:4])
                if parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                 for f in files]})
                if parts[4] == "commit":
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            value = item["value"]
                            hub.files.setdefault(f"{parts[1]}/{repo}", {})[value["path"]] = base64.b64decode(value["content"])
                    return self._json({"commitUrl": f"{hub.url}/{parts[1]}/{repo}/commit/abc123", "commitOid": "abc123",
                                       "pullRequestUrl": None})
                return self._json({"error": "unknown endpoint"}, 404)

            def _json(self, data, status=200):
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_every_config_the_card_lists_loads_with_datasets(capsys, filtered_run):
    import datasets
    from huggingface_hub import DatasetCard

    from workbench.export import all_columns, family_columns
    from workbench.families import FAMILIES

    run = filtered_run
    code, out, err = workbench(capsys, "export", str(run.root))
    assert code == 0, err
    folder = run.root / "export" / "dataset"
    accepted = pl.concat([run.read_table("accepted", c, ACCEPTED) for c in LANGUAGES])
    rejected = {c: run.read_table("rejected", c, REJECTED) for c in LANGUAGES}
    kept = sorted(set(accepted["language"]))
    assert kept == ["de", "sw"] and "bitext" in set(accepted["family"])  # the run holds what this test is about
    assert f"exported {accepted.height} examples in 2 language(s)" in out
    assert "left out so: no accepted rows" in out

    # files: one per family and language with rows, none empty, none for so
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jsonl"))
    expected = sorted(f"data/{f}/{c}.jsonl" for f, c in accepted.select("family", "language").unique().iter_rows())
    assert files == expected
    assert all((folder / f).stat().st_size > 0 for f in files)

    card = DatasetCard.load(folder / "README.md")
    assert sorted(card.data.language) == kept
    assert card.data.license == "other"
    assert "so: no accepted rows" in card.text
    for c in kept:
        assert f"| {c} | {load_registry().get(c).name} | {accepted.filter(pl.col('language') == c).height} | {rejected[c].height} |" in card.text
    assert f"lid_threshold = {RunConfig().filter.lid_threshold}" in card.text  # the filter policy, as configured
    assert not re.search(r"(^|[\s`'\"(])/(tmp|home|root|work|usr|var|Users)/", card.text)  # no local path
    assert str(run.root) not in card.text

    configs = [c["config_name"] for c in card.data.configs]
    families = sorted(set(accepted["family"]))
    assert configs[0] == "all" and card.data.configs[0]["default"] and sorted(configs[1:]) == families

    cache = run.root / "hf-cache"  # never ~/.cache: a stale cached copy would hide a wrong export
    by_slot = {r["slot_id"]: r for r in accepted.iter_rows(named=True)}
    loaded = {name: datasets.load_dataset(str(folder), name, split="train", cache_dir=str(cache)) for name in configs}
    default = datasets.load_dataset(str(folder), split="train", cache_dir=str(cache))
    assert default.column_names == all_columns() and default.num_rows == accepted.height
    assert sorted(default["slot_id"]) == sorted(by_slot)
    for name in families:
        rows = loaded[name]
        assert rows.column_names == family_columns(name)
        assert sorted(rows["slot_id"]) == sorted(accepted.filter(pl.col("family") == name)["slot_id"])
        for row in rows:
            source = by_slot[row["slot_id"]]
            assert {k: row[k] for k in row} == {k: source[k] for k in row}
    bitext = loaded["bitext"]
    assert FAMILIES["bitext"].cross_lingual and "target_language" in bitext.column_names
    assert all(r["target_language"] and r["target_language"] != r["language"] for r in bitext)
    for row in default:  # other families' fields are null in the default config; the row's own are there
        fields = set(family_columns(row["family"]))
        assert all(row[f] is None for f in set(all_columns()) - fields)
        assert all(row[f] is not None for f in fields - {"task"})


def test_export_again_removes_files_a_changed_run_no_longer_has(capsys, filtered_run, tmp_path):
    out = tmp_path / "ds"
    stale = out / "data" / "sw.jsonl"  # the layout of earlier versions
    stale.parent.mkdir(parents=True)
    stale.write_text("")
    code, _, err = workbench(capsys, "export", str(filtered_run.root), "--out", str(out))
    assert code == 0, err
    assert not stale.exists() and (out / "data" / "bitext" / "sw.jsonl").is_file()


def test_push_to_hub_uploads_the_folder_to_the_configured_endpoint(capsys, filtered_run, monkeypatch):
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        code, out, err = workbench(capsys, "export", str(filtered_run.root), "--push-to-hub", "me/e5-synthetic",
                                   "--private")
        assert code == 0, err
        assert hub.repos == [{"name": "e5-synthetic", "organization": "me", "visibility": "private", "type": "dataset"}]
        uploaded = hub.files["datasets/me/e5-synthetic"]
        folder = filtered_run.root / "export" / "dataset"
        assert set(uploaded) == {"README.md"} | {p.relative_to(folder).as_posix() for p in folder.rglob("*.jsonl")}
        assert hub.validated == [{"content": (folder / "README.md").read_text(encoding="utf-8"), "repoType": "dataset"}]
        assert uploaded["data/bitext/sw.jsonl"] == (folder / "data" / "bitext" / "sw.jsonl").read_bytes()
        assert all(h.get("authorization") == "Bearer hf_test_token" or h.get("Authorization") == "Bearer hf_test_token"
                   for h in hub.headers)
        assert f"dataset pushed: {hub.url}/datasets/me/e5-synthetic/commit/abc123" in out


def test_push_model_folder_and_hub_errors_are_one_line(capsys, tmp_path, filtered_run, monkeypatch):
    from workbench.export import push_to_hub

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        url = push_to_hub(model, "me/e5-minilm", "model")
        assert url == f"{hub.url}/models/me/e5-minilm/commit/abc123"
        assert hub.files["models/me/e5-minilm"] == {"config.json": b"{}"}
    with FakeHub(status=401) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        code, _, err = workbench(capsys, "export", str(filtered_run.root), "--push-to-hub", "me/x")
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "me/x: Hub upload failed (401" in lines[0] and "HF_TOKEN" in lines[0]
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    code, _, err = workbench(capsys, "export", str(filtered_run.root), "--push-to-hub", "me/x")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot reach the Hub" in err
    code, _, err = workbench(capsys, "export", str(filtered_run.root), "--push-to-hub", "no-namespace")
    assert code == 2 and "'no-namespace' is not a Hub repository id" in err


def test_push_model_without_a_trained_model_fails_before_writing(capsys, tmp_path, shared_data):
    registry = load_registry()
    run = make_run(tmp_path / "r", shared_data, registry, {"sw": 5})
    run_filter(run, RunConfig(), registry)
    code, _, err = workbench(capsys, "export", str(run.root), "--push-model-to-hub", "me/m")
    assert code == 2
    assert "no trained model in this run" in err and len(err.strip().splitlines()) == 1
    assert not (run.root / "export").exists()
    assert pl.read_parquet(run.table_path("accepted", "sw")).height >= 0


@pytest.mark.slow
def test_model_card_names_no_local_path_is_refreshed_by_eval_and_is_what_push_publishes(capsys, tmp_path,
                                                                                          shared_data, monkeypatch):
    """MiniLM trained on a real run; eval after training rewrites the card's Evaluation section, and
    --push-model-to-hub uploads that card (the upload itself is the fake Hub's)."""
    from workbench.encoder import minilm_path
    from workbench.train.stage import run_train

    from train_support import accepted_run, train_config

    run = accepted_run(tmp_path / "run", shared_data, n=12)
    run_train(run, train_config("minilm", deepspeed="none", lora=False, steps=2, batch_size=4, max_length=32,
                                gradient_checkpointing=False), None)
    model_dir = run.root / "train" / "model"
    assert "Not evaluated yet" in (model_dir / "README.md").read_text(encoding="utf-8")
    xquad = REPO / "examples" / "data" / "xquad"
    code, _, err = workbench(capsys, "eval", str(run.root), "--model", "bm25", "--task", "xquad", "--data-dir",
                             str(xquad), "-l", "de")
    assert code == 0, err
    # the same BM25 on the full XQuAD German corpus (240 paragraphs) beside the repository's 60-paragraph subset
    code, _, err = workbench(capsys, "eval", str(run.root), "--model", "bm25", "--system", "bm25-full", "--task",
                             "xquad", "--data-dir", str(shared_data / "xquad"), "-l", "de")
    assert code == 0, err
    code, _, err = workbench(capsys, "eval", str(run.root), "--model", str(model_dir), "--system", "minilm-ft",
                             "--task", "xquad", "--data-dir", str(xquad), "-l", "de")
    assert code == 0, err
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    ndcg = {r["system"]: r for r in run.read_table("eval", "results", EVAL_RESULTS).filter(
        pl.col("metric") == "ndcg_at_10").iter_rows(named=True)}
    assert "Not evaluated" not in card
    # each number with the conditions it was measured under: a subset's figure never reads as the full corpus's
    assert "| system | task | task kind | dataset | corpus | language | split | instruction | max length |" in card
    assert (f"| bm25 | XQuADRetrieval | retrieval | xquad-de | a subset of the corpus | de | test | no instruction | n/a "
            f"| nDCG@10 | {ndcg['bm25']['value']:.1f} | 318 |") in card
    assert (f"| bm25-full | XQuADRetrieval | retrieval | xquad-de | full corpus | de | test | no instruction | n/a "
            f"| nDCG@10 | {ndcg['bm25-full']['value']:.1f} | {ndcg['bm25-full']['n_queries']} |") in card
    trained = ndcg["minilm-ft"]  # the fine-tuned model runs under its own contract: its instruction and 32 tokens
    assert trained["max_length"] == 32 and trained["instruction"] not in (None, conditions.NO_INSTRUCTION)
    assert (f"| minilm-ft | XQuADRetrieval | retrieval | xquad-de | a subset of the corpus | de | test "
            f"| {conditions.instruction_words(trained['instruction'])} | 32 | nDCG@10 | {trained['value']:.1f} | 318 |") in card
    contract = json.loads((model_dir / "workbench_encoder.json").read_text())
    for text in (card, json.dumps(contract)):  # no local path anywhere a push publishes in words
        assert str(minilm_path()) not in text and str(tmp_path) not in text and "site-packages" not in text
        assert not re.search(r"(^|[\s`'\"(])/(tmp|home|root|work|usr|var|Users)/", text)
    assert (model_dir / contract["trained_on"]).resolve() == run.root.resolve()  # the run, relative to the model
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        code, out, err = workbench(capsys, "export", str(run.root), "--push-model-to-hub", "me/e5-minilm")
        assert code == 0, err
        uploaded = hub.files["models/me/e5-minilm"]
    assert uploaded["README.md"].decode() == card and "workbench_encoder.json" in uploaded
