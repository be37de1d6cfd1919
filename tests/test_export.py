"""`workbench export`: accepted data as JSONL + a dataset card `datasets` reads; Hub upload to a local fake.

The run is built by the real filter over real Tatoeba text; the Hub is a small HTTP server on
127.0.0.1 that speaks the three endpoints huggingface_hub's upload uses (create repo, preupload,
commit). No other host is contacted.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest

from filter_fixtures import make_run
from workbench.config import RunConfig
from workbench.filter.stage import run_filter
from workbench.languages import load_registry
from workbench.tables import ACCEPTED, REJECTED

from cli_support import workbench


@pytest.fixture(scope="module")
def filtered_run(tmp_path_factory, shared_data):
    registry = load_registry()
    run = make_run(tmp_path_factory.mktemp("run") / "r", shared_data, registry, {"sw": 40, "de": 30})
    run_filter(run, RunConfig(), registry)
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


def test_export_writes_jsonl_and_a_card_datasets_can_load(capsys, filtered_run):
    import datasets
    from huggingface_hub import DatasetCard

    run = filtered_run
    code, out, err = workbench(capsys, "export", str(run.root))
    assert code == 0, err
    folder = run.root / "export" / "dataset"
    accepted = {code: run.read_table("accepted", code, ACCEPTED) for code in ("sw", "de")}
    rejected = {code: run.read_table("rejected", code, REJECTED) for code in ("sw", "de")}
    assert f"exported {sum(t.height for t in accepted.values())} examples in 2 language(s)" in out
    for code, table in accepted.items():
        lines = (folder / "data" / f"{code}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == table.height > 0
        records = [json.loads(line) for line in lines]
        assert [r["slot_id"] for r in records] == table["slot_id"].to_list()
        first = table.row(0, named=True)
        from workbench.families import FAMILIES

        assert set(records[0]) == {"slot_id", "language", "family", "task", "model", *FAMILIES[first["family"]].fields}
        for name in FAMILIES[first["family"]].fields:
            assert records[0][name] == first[name]

    card = DatasetCard.load(folder / "README.md")
    assert sorted(card.data.language) == ["de", "sw"]
    assert card.data.license == "other"
    text = card.text
    for code in ("sw", "de"):
        assert f"| {code} | {load_registry().get(code).name} | {accepted[code].height} | {rejected[code].height} |" in text
    assert f"lid_threshold = {RunConfig().filter.lid_threshold}" in text  # the filter policy, as configured
    assert "Licence" in text and "Generator" in text

    cache = run.root / "hf-cache"  # never ~/.cache: a stale cached copy would hide a wrong export
    swahili = datasets.load_dataset(str(folder), "sw", split="train", cache_dir=str(cache))
    assert swahili.num_rows == accepted["sw"].height
    everything = datasets.load_dataset(str(folder), split="train", cache_dir=str(cache))
    assert everything.num_rows == sum(t.height for t in accepted.values())


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
        assert set(uploaded) == {"README.md", "data/sw.jsonl", "data/de.jsonl"}
        assert hub.validated == [{"content": (folder / "README.md").read_text(encoding="utf-8"), "repoType": "dataset"}]
        assert uploaded["data/sw.jsonl"] == (folder / "data" / "sw.jsonl").read_bytes()
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
